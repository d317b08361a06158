// Package client submits jobs to Gearman job servers — Gearwork, or any
// server that speaks the Gearman protocol, such as gearmand.
//
// Create a Client with New, then:
//
//   - Client.Do runs a foreground job and waits for its result, streaming
//     its data, warnings and progress to Request.UpdateFunc;
//   - Client.Submit does the same in two steps, returning a Task once the
//     server has created the job;
//   - Client.SubmitBackground hands a job over and returns its Job
//     (handle and server) at once; Request.RunAt delays it;
//   - Client.Status and Client.StatusUnique ask how a job is doing.
//
// Every method takes a context.Context first; cancelling it stops the
// wait, not the job.
//
// # Outcomes
//
// A foreground job ends in one of three ways: its result (WORK_COMPLETE),
// an error wrapping ErrJobFailed (WORK_FAIL), or an *ExceptionError
// carrying the worker's exception data (WORK_EXCEPTION; the client asks
// every server for exceptions with OPTION_REQ). A request the server
// refuses, such as a submit to a full queue, fails with a *ServerError.
//
// # Connections
//
// A Client keeps one connection per server, opened by the first request
// that needs it, and multiplexes every concurrent request over it:
// requests are written in bursts (concurrent callers share one write), the
// server's answers arrive in request order, and the updates of foreground
// jobs are routed by job handle. No goroutine is started per request; each
// connection has one reader goroutine, and Request.UpdateFunc runs on it:
// an UpdateFunc that blocks or calls back into the Client holds up every
// request on that connection (hand the update to a goroutine or channel of
// your own when there is work to do).
//
// # Several servers
//
// With several servers, a request with a unique id goes to the server
// chosen by rendezvous hashing of the unique, so that the same unique
// always meets the same server (and coalesces there) while that server is
// up, and only uniques of a server that is down move. Requests without a
// unique go round-robin. A server that cannot be reached is skipped for a
// backoff period that doubles, with jitter, from Config.MinBackoff up to
// Config.MaxBackoff, and the request goes to the next server in its order.
// When none is left the request fails with ErrNoServer.
//
// # Caveats
//
// A request already written to a connection that then breaks fails with
// ErrConnLost and is not retried elsewhere: the server may have accepted
// it, and resubmitting is the caller's decision. Foreground jobs end with
// their connection (the server drops them), and the protocol has no way
// to detach from a foreground job short of closing the connection: a job
// whose caller stopped waiting keeps running and its result is dropped.
// Job handles are unique per server only, which is why Job carries its
// server's address.
package client
