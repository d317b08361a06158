package httpapi

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
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
	NextAfter *string        `json:"next_after"`
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

// GET /v1/functions?after= pages through every function by name, those
// the bounded list leaves out too: each page names where the next one
// starts, and a function created meanwhile shows up if it sorts after the
// pages read, without any function repeated or skipped.
func TestListFunctionsPagesByName(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	busyFunctions(t, tb)

	var got []string
	after := ""
	for pages := 0; ; pages++ {
		require.Less(t, pages, 10, "paging does not end: %v", got)
		page := decode[functionsPage](t, tb.do(t, "GET", "/v1/functions?limit=6&after="+after, nil))
		require.LessOrEqual(t, len(page.Functions), 6)
		require.NotNil(t, page.Omitted)
		for _, f := range page.Functions {
			got = append(got, f.Name)
		}
		if pages == 0 {
			require.Equal(t, []string{"fn00", "fn01", "fn02", "fn03", "fn04", "fn05"}, got)
			require.Equal(t, 14, *page.Omitted, "the functions not on the page")
			// One sorts among the names read already, one after them.
			require.NoError(t, tb.b.CreateFunction("fn04a"))
			require.NoError(t, tb.b.CreateFunction("fn15a"))
		}
		if page.NextAfter == nil {
			require.Equal(t, 22-len(page.Functions), *page.Omitted, "20 functions and the two created")
			break
		}
		require.Equal(t, page.Functions[len(page.Functions)-1].Name, *page.NextAfter)
		after = *page.NextAfter
	}
	want := []string{"fn00", "fn01", "fn02", "fn03", "fn04", "fn05"}
	for i := 6; i < 20; i++ {
		want = append(want, fmt.Sprintf("fn%02d", i))
		if i == 15 {
			want = append(want, "fn15a")
		}
	}
	require.Equal(t, want, got)

	page := decode[functionsPage](t, tb.do(t, "GET", "/v1/functions?after=fn19", nil))
	require.Empty(t, page.Functions)
	require.Nil(t, page.NextAfter)
	require.Equal(t, 22, *page.Omitted)
	page = decode[functionsPage](t, tb.do(t, "GET", "/v1/functions?after=fn1&limit=2", nil))
	require.Equal(t, map[string]bool{"fn10": true, "fn11": true}, names(page.Functions))
	require.Equal(t, "fn11", *page.NextAfter)
	page = decode[functionsPage](t, tb.do(t, "GET", "/v1/functions?limit=3", nil))
	require.Nil(t, page.NextAfter, "the bounded list is no page")

	requireProblem(t, tb.do(t, "GET", "/v1/functions?after=fn01&function=fn17", nil), http.StatusBadRequest, "after")
}

// Names that are not UTF-8 (a Gearman peer may use any bytes) show in JSON
// with U+FFFD for each such byte, so the cursor is a name as shown: the
// names that show alike come on one page, and paging ends, each function
// listed once, even one at a time.
func TestListFunctionsPagesNamesThatAreNotUTF8(t *testing.T) {
	t.Parallel()
	tb := setup(t)
	for _, fn := range []string{"a", "\xf0x", "\xf1x", "\xffx", "\ufffdx", "zz"} {
		require.NoError(t, tb.b.CreateFunction(fn))
	}
	var got [][]string
	after := ""
	for {
		require.Less(t, len(got), 10, "paging does not end: %q", got)
		page := decode[functionsPage](t, tb.do(t, "GET", "/v1/functions?limit=1&after="+url.QueryEscape(after), nil))
		var names []string
		for _, f := range page.Functions {
			names = append(names, f.Name)
		}
		got = append(got, names)
		if page.NextAfter == nil {
			break
		}
		after = *page.NextAfter
	}
	require.Equal(t, [][]string{{"a"}, {"zz"}, {"\ufffdx", "\ufffdx", "\ufffdx", "\ufffdx"}}, got)
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
