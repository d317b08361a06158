package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/gearwork/gearwork/internal/broker"
)

// fuzzServer is an API server over an in-memory broker, driven without a
// network.
func fuzzServer(f *testing.F) http.Handler {
	b := broker.New(broker.Config{HandlePrefix: "H:fuzz:"})
	if err := b.Start(context.Background()); err != nil {
		f.Fatal(err)
	}
	srv := New(Config{Broker: b})
	f.Cleanup(func() {
		_ = srv.Shutdown(context.Background())
		b.Stop()
	})
	return srv.Handler()
}

// checkAnswer fails unless the answer is a success or an RFC 9457 problem
// with a JSON body.
func checkAnswer(t *testing.T, rec *httptest.ResponseRecorder) {
	t.Helper()
	if rec.Code >= 500 {
		t.Fatalf("server error %d: %s", rec.Code, rec.Body.Bytes())
	}
	if rec.Code >= 400 {
		if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
			t.Fatalf("error %d with content type %q", rec.Code, ct)
		}
		var p map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p["detail"] == "" {
			t.Fatalf("error %d without a problem body: %q", rec.Code, rec.Body.Bytes())
		}
	}
}

// FuzzBatch posts arbitrary NDJSON to the batch endpoint: every answer is
// either a per-line NDJSON result stream or a problem, never a panic or a
// server error.
func FuzzBatch(f *testing.F) {
	for _, s := range []string{
		`{"function":"f","payload":"x"}`,
		"{\"function\":\"f\",\"payload_base64\":\"eA==\",\"priority\":\"high\"}\n{\"function\":\"g\"}\n",
		`{"function":"f","unknown":1}`,
		`{"function":"","payload":"x"}`,
		"\n\n",
		`{"function":"f","run_at":"2030-01-01T00:00:00Z","attempts":3,"timeout":"1s","ordering_key":"k"}`,
		`[1,2,3]`,
		"{\"function\":\"f\"}garbage",
	} {
		f.Add([]byte(s))
	}
	h := fuzzServer(f)
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1/v1/jobs:batch", bytes.NewReader(body))
		req.RemoteAddr = "127.0.0.1:1"
		req.Header.Set("Content-Type", "application/x-ndjson")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		checkAnswer(t, rec)
		if rec.Code < 300 {
			sc := bufio.NewScanner(rec.Body)
			for sc.Scan() {
				var line map[string]any
				if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
					t.Fatalf("batch answer line is not JSON: %q", sc.Bytes())
				}
			}
		}
	})
}

// FuzzSubmitOptions submits a job with arbitrary query options and body.
func FuzzSubmitOptions(f *testing.F) {
	for _, q := range []string{"", "priority=high", "priority=bogus", "unique=u&attempts=3&timeout=5s",
		"run-at=2030-01-01T00:00:00Z", "run-at=-1", "attempts=-5", "timeout=forever", "ordering-key=%00"} {
		f.Add(q, []byte("payload"))
	}
	h := fuzzServer(f)
	f.Fuzz(func(t *testing.T, query string, body []byte) {
		v, err := url.ParseQuery(query)
		if err != nil {
			return
		}
		v.Del("wait") // a wait would only make the fuzzer sleep
		req := httptest.NewRequest(http.MethodPost, "http://127.0.0.1/v1/functions/fn/jobs?"+v.Encode(), bytes.NewReader(body))
		req.RemoteAddr = "127.0.0.1:1"
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		checkAnswer(t, rec)
	})
}
