package httpapi

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gearwork/gearwork/internal/broker"
)

// fuzzServer is an API server over an in-memory broker, driven without a
// network.
func fuzzServer(f *testing.F) http.Handler {
	b := broker.New(broker.Config{HandlePrefix: "H:fuzz:"})
	if err := b.Start(context.Background()); err != nil {
		f.Fatal(err)
	}
	// httptest's requests name the host example.com.
	srv := New(Config{Broker: b, AllowedHosts: []string{"example.com"}})
	f.Cleanup(func() {
		_ = srv.Shutdown(context.Background())
		b.Stop()
	})
	h := srv.Handler()
	// The fuzzers check what accepted submits carry: make sure that a
	// plain one is accepted at all.
	req := httptest.NewRequest(http.MethodPost, "/v1/functions/fn/jobs", strings.NewReader("x"))
	req.RemoteAddr = "127.0.0.1:1"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusCreated && rec.Code != http.StatusAccepted {
		f.Fatalf("a plain submit is refused (%d %s): the fuzzers would check nothing", rec.Code, rec.Body.Bytes())
	}
	return h
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
		err := json.Unmarshal(rec.Body.Bytes(), &p)
		if detail, _ := p["detail"].(string); err != nil || detail == "" {
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
		if rec.Code >= 300 {
			return
		}
		// The input lines as bufio.Scanner splits them, numbered from 1.
		var lines []string
		in := bufio.NewScanner(bytes.NewReader(body))
		in.Buffer(nil, len(body)+1)
		for in.Scan() {
			lines = append(lines, in.Text())
		}
		sc := bufio.NewScanner(rec.Body)
		for sc.Scan() {
			var res struct {
				Line    int    `json:"line"`
				Handle  string `json:"handle"`
				Created *bool  `json:"created"`
			}
			if err := json.Unmarshal(sc.Bytes(), &res); err != nil {
				t.Fatalf("batch answer line is not JSON: %q", sc.Bytes())
			}
			if res.Created == nil || !*res.Created {
				continue // an error, or joined a job submitted earlier with its own options
			}
			if res.Line < 1 || res.Line > len(lines) {
				t.Fatalf("answer for line %d of %d: %q", res.Line, len(lines), sc.Bytes())
			}
			var want submitModel
			if err := json.Unmarshal([]byte(lines[res.Line-1]), &want); err != nil {
				t.Fatalf("line %d was accepted but is not a JSON object: %q (%v)", res.Line, lines[res.Line-1], err)
			}
			checkCarried(t, h, res.Handle, want)
		}
	})
}

// submitModel is what a submit asked for, read by the test itself: a
// batch line, or the query options of a single submit.
type submitModel struct {
	Priority    string          `json:"priority"`
	Unique      string          `json:"unique"`
	RunAt       json.RawMessage `json:"run_at"`
	Attempts    *int            `json:"attempts"`
	OrderingKey string          `json:"ordering_key"`
}

// checkCarried fetches the job the server created and fails unless it
// carries the options it was submitted with. (The timeout is not part of
// a job's record.)
func checkCarried(t *testing.T, h http.Handler, handle string, want submitModel) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, "/v1/jobs/"+url.PathEscape(handle), nil)
	req.RemoteAddr = "127.0.0.1:1"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("GET of the created job %s: %d %s", handle, rec.Code, rec.Body.Bytes())
	}
	var got struct {
		Priority    string     `json:"priority"`
		Unique      string     `json:"unique"`
		RunAt       *time.Time `json:"run_at"`
		MaxAttempts int        `json:"max_attempts"`
		OrderingKey string     `json:"ordering_key"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("job record: %v", err)
	}
	prio := cmp.Or(strings.ToLower(want.Priority), "normal")
	if got.Priority != prio {
		t.Fatalf("submitted with priority %q, the job has %q", want.Priority, got.Priority)
	}
	if want.Unique != "" && want.Unique != "-" && got.Unique != want.Unique {
		t.Fatalf("submitted with unique %q, the job has %q", want.Unique, got.Unique)
	}
	if got.OrderingKey != want.OrderingKey {
		t.Fatalf("submitted with ordering key %q, the job has %q", want.OrderingKey, got.OrderingKey)
	}
	if want.Attempts != nil && got.MaxAttempts != *want.Attempts {
		t.Fatalf("submitted with attempts %d, the job has max_attempts %d", *want.Attempts, got.MaxAttempts)
	}
	if len(want.RunAt) > 0 && string(want.RunAt) != "null" && string(want.RunAt) != `""` { // "" and null: no run_at
		at, ok := modelRunAt(want.RunAt)
		if !ok {
			t.Fatalf("run_at %s was accepted, but it is neither RFC 3339 nor Unix seconds", want.RunAt)
		}
		if at > time.Now().Unix()+1 && (got.RunAt == nil || got.RunAt.Unix() != at) {
			t.Fatalf("submitted to run at %d (%s), the job has run_at %v", at, want.RunAt, got.RunAt)
		}
	}
}

// modelRunAt reads a run_at value as the API documents it: RFC 3339 or
// Unix seconds, as a JSON string or number.
func modelRunAt(raw json.RawMessage) (int64, bool) {
	var v string
	if err := json.Unmarshal(raw, &v); err != nil {
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return 0, false
		}
		// A number is Unix seconds if it is whole, however written.
		f, err := strconv.ParseFloat(n.String(), 64)
		if err != nil || f != math.Trunc(f) || f < 0 || f >= 1<<63 {
			return 0, false
		}
		return int64(f), true
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n >= 0 {
		return n, true
	}
	if at, err := time.Parse(time.RFC3339, v); err == nil {
		return at.Unix(), true
	}
	return 0, false
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
		if rec.Code >= 300 {
			return
		}
		var res struct {
			Handle  string `json:"handle"`
			Created *bool  `json:"created"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
			t.Fatalf("submit answer: %v: %q", err, rec.Body.Bytes())
		}
		if res.Created == nil || !*res.Created {
			return // joined a job submitted earlier with its own options
		}
		want := submitModel{Priority: v.Get("priority"), Unique: v.Get("unique"), OrderingKey: v.Get("ordering-key")}
		if a := v.Get("attempts"); a != "" {
			n, err := strconv.Atoi(a)
			if err != nil {
				t.Fatalf("attempts %q was accepted, but it is not a number", a)
			}
			want.Attempts = &n
		}
		if r := v.Get("run-at"); r != "" {
			want.RunAt, _ = json.Marshal(r)
		}
		checkCarried(t, h, res.Handle, want)
	})
}
