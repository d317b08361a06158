// Package worker runs jobs from Gearman job servers — Gearwork, or any
// server that speaks the Gearman protocol, such as gearmand.
//
// Register functions the way net/http registers handlers — a Handler
// interface, a HandlerFunc adapter, and Worker.Handle / Worker.HandleFunc
// (or Worker.Register for a function with a timeout) — then Start the
// worker and end it with Shutdown or Stop.
//
// # Outcomes
//
// A Handler's result is sent as WORK_COMPLETE. Returning an *Exception
// sends WORK_EXCEPTION with its data; any other error, or a panic, sends
// WORK_FAIL, which the server treats as final. While it runs, a job can
// stream output (Job.SendData), warnings (Job.SendWarning) and progress
// (Job.SendStatus) to the clients waiting for it.
//
// # Concurrency and scheduling
//
// Config.Concurrency bounds the jobs running at once across all servers.
// The worker asks for a job (GRAB_JOB_UNIQ) only when it has a free slot,
// pipelines several requests per connection while jobs keep coming
// (Config.GrabsInFlight), and when a server has nothing it sends
// PRE_SLEEP and waits for the server's NOOP: it never polls. The result of
// a job and the request for the next one leave in the same write.
//
// # Cancellation and timeouts
//
// Each job's context is cancelled, with a cause, when its function's
// Timeout passes (ErrTimeout; the worker registered with CAN_DO_TIMEOUT,
// so Gearwork fails the job and sends its clients WORK_FAIL, unless the
// function's retry policy allows another attempt; gearmand takes it back
// and runs it again), when the connection it came on breaks (ErrConnLost;
// the server requeues it), and when the worker is stopped (ErrStopped). An
// error a handler returns after its context was cancelled is not reported:
// the server has already decided the job's fate.
//
// # Shutdown
//
// Shutdown is graceful: the worker stops asking for jobs, waits for the
// running ones to finish and their results to be written, then closes its
// connections; if its context ends first it cancels the jobs instead. Stop
// cancels at once and waits for handlers to return. Both are safe to call
// twice and before Start.
//
// # Guarantees
//
// Gearman delivers a job at least once: a job whose worker vanished,
// timed out or was stopped runs again, possibly on another worker, so
// handlers should be idempotent. Servers that are down are retried in the
// background with a backoff that doubles, with jitter, from
// Config.MinBackoff to Config.MaxBackoff; the worker registers its
// functions again on every new connection.
package worker
