package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"net/url"
	"strings"

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/httpapi"
)

// A web handler submits a job and answers at once; an HTTP worker (any
// language with an HTTP client) takes it with a long poll and completes it;
// the result can then be read back by its handle.
func Example() {
	b := broker.New(broker.Config{})
	if err := b.Start(context.Background()); err != nil {
		panic(err)
	}
	defer b.Stop()
	srv := httpapi.New(httpapi.Config{Broker: b})
	defer srv.Shutdown(context.Background())
	ts := httptest.NewServer(srv.Handler())
	defer ts.Close()
	client := ts.Client()

	// Submit: 202 Accepted with the job's handle.
	resp, err := client.Post(ts.URL+"/v1/functions/greet/jobs", "text/plain", strings.NewReader("Ann"))
	if err != nil {
		panic(err)
	}
	var job struct{ Handle, State string }
	_ = json.NewDecoder(resp.Body).Decode(&job)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, job.State)

	// An HTTP worker takes the job under a lease and completes it.
	resp, err = client.Post(ts.URL+"/v1/functions/greet/grab?wait=10s", "", nil)
	if err != nil {
		panic(err)
	}
	var g struct {
		Handle, Lease string
		Payload       string `json:"payload_text"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&g)
	resp.Body.Close()
	jobURL := ts.URL + "/v1/jobs/" + url.PathEscape(g.Handle)
	resp, err = client.Post(jobURL+"/complete?lease="+g.Lease, "text/plain", strings.NewReader("Hello, "+g.Payload))
	if err != nil {
		panic(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode)

	// The result, by handle.
	resp, err = client.Get(ts.URL + "/v1/jobs/" + url.PathEscape(job.Handle))
	if err != nil {
		panic(err)
	}
	var done struct {
		State  string
		Result string `json:"result_text"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&done)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, done.State, done.Result)
	// Output:
	// 202 queued
	// 204
	// 200 complete Hello, Ann
}
