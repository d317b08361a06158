package hostile_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
	"github.com/gearwork/gearwork/internal/testserver"
)

// TestOpenBatchesAreBounded creates batches and never closes them, as a
// hostile or broken client would: each is kept until it completes (and
// then for --batch-retention), so 200,000 of them took 80 MB that nothing
// would ever free, and a batch created over HTTP keeps its callbacks'
// payloads too. With the default limit the server refuses the next one
// until some complete.
func TestOpenBatchesAreBounded(t *testing.T) {
	srv := testserver.Start(t, "--http", "127.0.0.1:0")
	c := wire.Dial(t, srv.Addr)
	const chunk = 1000
	var first string
	for n := 0; n < broker.DefaultMaxOpenBatches; n += chunk {
		c.Write(bytes.Repeat([]byte("batch create\n"), chunk))
		for range chunk {
			l := c.Line()
			id, ok := strings.CutPrefix(l, "OK ")
			require.True(t, ok, "batch create: %q", l)
			if first == "" {
				first = strings.TrimSpace(id)
			}
		}
	}
	c.Write([]byte("batch create\n"))
	l := c.Line()
	require.True(t, strings.HasPrefix(l, "ERR BATCH_ERROR too+many+open+batches"), "%q", l)
	require.Contains(t, l, "--max-open-batches")

	for _, tc := range []struct {
		payload int
		status  int
		kind    string
	}{
		{1 << 10, http.StatusServiceUnavailable, "too-many-batches"},
		// A callback's payload is kept with its batch, and stored anew
		// with every change of its counts: it is bounded too.
		{broker.MaxCallbackPayload + 1, http.StatusRequestEntityTooLarge, "callback-too-large"},
	} {
		resp, err := http.Post("http://"+srv.HTTPAddr(t)+"/v1/batches", "application/json",
			strings.NewReader(`{"on_success": {"function": "report", "payload": "`+strings.Repeat("x", tc.payload)+`"}, "open": true}`))
		require.NoError(t, err)
		var problem struct{ Type, Detail string }
		require.NoError(t, json.NewDecoder(resp.Body).Decode(&problem))
		require.NoError(t, resp.Body.Close())
		require.Equal(t, tc.status, resp.StatusCode, "%+v", problem)
		require.Contains(t, problem.Type, tc.kind)
	}

	// An empty batch completes as it is closed, which makes room.
	c.Write([]byte("batch close " + first + "\n"))
	require.Equal(t, "OK\n", c.Line())
	c.Write([]byte("batch create\n"))
	require.True(t, strings.HasPrefix(c.Line(), "OK "))
	require.True(t, srv.Alive())
}
