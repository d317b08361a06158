package httpapi

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// busyFunctions makes 20 functions fn00..fn19 of which fn10, fn17, fn18
// and fn19 hold something (jobs or a worker).
func busyFunctions(t *testing.T, tb *testBundle) {
	t.Helper()
	for i := range 20 {
		require.NoError(t, tb.b.CreateFunction(fmt.Sprintf("fn%02d", i)))
	}
	for _, fn := range []string{"fn17", "fn18"} {
		require.Equal(t, http.StatusAccepted, tb.do(t, "POST", "/v1/functions/"+fn+"/jobs", strings.NewReader("x")).StatusCode)
	}
	newTestWorker(t, tb.b, "fn19")
	newTestWorker(t, tb.b, "fn10")
}

func names(fns []functionJSON) map[string]bool {
	out := map[string]bool{}
	for _, f := range fns {
		out[f.Name] = true
	}
	return out
}

type functionsPage struct {
	Functions []functionJSON `json:"functions"`
	Omitted   *int           `json:"functions_omitted"`
}

// The dashboard's overview carries at most OverviewMaxFunctions functions,
// those holding something first, and says how many it left out: a server
// knowing many functions does not send them all every second to every
// subscriber.
func TestOverviewBoundFunctions(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(c *Config) { c.OverviewMaxFunctions = 5 })
	busyFunctions(t, tb)

	resp := tb.do(t, "GET", "/v1/stream", nil, "Accept", "text/event-stream")
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	br := bufio.NewReader(resp.Body)
	var o functionsPage
	for {
		line, err := br.ReadString('\n')
		require.NoError(t, err)
		if data, ok := strings.CutPrefix(line, "data: "); ok {
			require.NoError(t, json.Unmarshal([]byte(data), &o))
			break
		}
	}
	got := names(o.Functions)
	require.Len(t, got, 5, "functions in the overview: %v", got)
	for _, fn := range []string{"fn10", "fn17", "fn18", "fn19"} {
		require.True(t, got[fn], "%s holds something and is not in the overview: %v", fn, got)
	}
	require.NotNil(t, o.Omitted, "the overview does not say how many functions it left out")
	require.Equal(t, 15, *o.Omitted)
}

// GET /v1/functions lists at most limit functions (busy ones first) and
// says how many it left out; ?function= reaches one that was left out;
// bad values are a problem response.
func TestListFunctionsBounded(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	busyFunctions(t, tb)

	page := decode[functionsPage](t, tb.do(t, "GET", "/v1/functions?limit=5", nil))
	got := names(page.Functions)
	require.Len(t, got, 5, "functions listed: %v", got)
	for _, fn := range []string{"fn10", "fn17", "fn18", "fn19"} {
		require.True(t, got[fn], "%s holds something and is not listed: %v", fn, got)
	}
	require.NotNil(t, page.Omitted)
	require.Equal(t, 15, *page.Omitted)
	require.False(t, got["fn05"])

	page = decode[functionsPage](t, tb.do(t, "GET", "/v1/functions?function=fn05&function=fn17&function=nosuch", nil))
	require.Equal(t, map[string]bool{"fn05": true, "fn17": true}, names(page.Functions))
	require.Equal(t, 0, *page.Omitted)
	for _, f := range page.Functions {
		if f.Name == "fn17" {
			require.Equal(t, 1, f.Total)
		}
	}

	page = decode[functionsPage](t, tb.do(t, "GET", "/v1/functions", nil))
	require.Len(t, page.Functions, 20)
	require.Equal(t, 0, *page.Omitted)

	for _, v := range []string{"0", "-1", "10001", "x"} {
		requireProblem(t, tb.do(t, "GET", "/v1/functions?limit="+v, nil), http.StatusBadRequest, "limit")
	}
}

// Dashboards open together share one overview (it reads every function's
// counters): their first events are the same one, made once.
func TestOverviewIsSharedByStreams(t *testing.T) {
	t.Parallel()
	tb := setup(t, func(c *Config) { c.OverviewInterval = time.Hour })
	busyFunctions(t, tb)
	var first string
	for i := range 5 {
		resp := tb.do(t, "GET", "/v1/stream", nil, "Accept", "text/event-stream")
		require.Equal(t, http.StatusOK, resp.StatusCode)
		br := bufio.NewReader(resp.Body)
		for {
			line, err := br.ReadString('\n')
			require.NoError(t, err)
			if data, ok := strings.CutPrefix(line, "data: "); ok {
				if i == 0 {
					first = data
				}
				require.Equal(t, first, data, "stream %d got an overview of its own", i)
				break
			}
		}
		resp.Body.Close()
	}
}
