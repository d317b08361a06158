package gearmanapi

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
)

// The lifecycle admin commands: policies, dead letters, pauses, results,
// schedules, ordering (see docs/lifecycle.md). Their entries are in
// adminCommands.

func adminShowSchedules(_ context.Context, c *conn, _ []string, a *adminAnswer) {
	for _, s := range c.srv.b.Schedules() {
		fmt.Fprintf(a, "%s\t%s\t%s\t%s\t%s\n", adminText(s.Name), adminText(s.Function), s.Spec, fmtTime(s.Last), fmtTime(s.Next))
	}
	a.WriteString(".\n")
}

func adminShowOrdering(_ context.Context, c *conn, args []string, a *adminAnswer) {
	b := c.srv.b
	fn := ""
	if len(args) > 0 {
		fn = args[0]
	}
	for _, o := range b.Orderings(fn) {
		head := "-"
		if o.Head != 0 {
			head = b.Handle(o.Head)
		}
		fmt.Fprintf(a, "%s\t%s\t%s\t%s\t%d\n", adminText(o.Function), adminText(o.Key), head, dash(o.HeadState), o.Waiting)
		if !a.spill() {
			break
		}
	}
	a.WriteString(".\n")
}

func adminResume(ctx context.Context, c *conn, args []string, a *adminAnswer) {
	if len(args) != 1 {
		a.WriteString(errArgs("resume"))
		return
	}
	if !c.srv.b.KnownFunction(args[0]) {
		a.WriteString(errUnknownFunction(args[0]))
		return
	}
	c.srv.b.Resume(args[0])
	answerDurable(ctx, c, a)
}

// answerDurable answers OK to an action that changed stored state once the
// change is on disk, or the error that prevented it.
func answerDurable(ctx context.Context, c *conn, a *adminAnswer) {
	if err := c.srv.b.Durable(ctx); err != nil {
		a.WriteString(errText(err))
		return
	}
	a.WriteString(textOK)
}

// adminDeadLetters lists dead letters; without a function, those of the
// functions the connection may read.
func adminDeadLetters(ctx context.Context, c *conn, args []string, a *adminAnswer) {
	fn := ""
	if len(args) > 0 {
		fn = args[0]
		if !c.checkRead(fn, a) {
			return
		}
	}
	dls, err := c.srv.b.DeadLetters(ctx, fn, 0)
	if err != nil {
		a.WriteString(errText(err))
		return
	}
	for _, d := range dls {
		if !c.mayRead(d.Function) {
			continue
		}
		fmt.Fprintf(a, "%s\t%s\t%s\t%d\t%s\t%s\n", d.Handle, adminText(d.Function), adminText(dash(d.Unique)),
			d.Attempts, fmtTime(d.DiedAt), strconv.Quote(d.LastError))
		if !a.spill() {
			break
		}
	}
	a.WriteString(".\n")
}

// errUnknownFunction answers a lifecycle command (pause, resume, policy)
// naming a function the server does not know.
func errUnknownFunction(name string) string {
	return "ERR UNKNOWN_FUNCTION " + url.QueryEscape("unknown function "+name) + "\r\n"
}

// errInvalid is an ERR INVALID_ARGUMENTS answer with a readable message,
// spaces as '+' like gearmand's error texts.
func errInvalid(msg string) string {
	return "ERR INVALID_ARGUMENTS " + strings.ReplaceAll(msg, " ", "+") + "\r\n"
}

func adminShowPolicy(_ context.Context, c *conn, args []string, sb *adminAnswer) {
	b := c.srv.b
	line := func(name, source, state string, p broker.Policy) {
		fmt.Fprintf(sb, "%s\t%s\t%s\t%s\n", adminText(name), source, state, p.Format())
	}
	if len(args) == 0 {
		line("*", "default", "-", b.DefaultPolicy())
	}
	found := false
	for _, fp := range b.Policies() {
		if len(args) > 0 && fp.Name != args[0] {
			continue
		}
		found = true
		source := "default"
		if fp.Explicit {
			source = "explicit"
		}
		state := "active"
		switch {
		case fp.Paused && fp.PausedUntil.IsZero():
			state = "paused"
		case fp.Paused:
			state = "paused-until=" + fmtTime(fp.PausedUntil)
		}
		line(fp.Name, source, state, fp.Policy)
		if !sb.spill() {
			break
		}
	}
	if len(args) > 0 && !found {
		// Unknown function: it would follow the default policy.
		line(args[0], "default", "active", b.Policy(args[0]))
	}
	sb.WriteString(".\n")
}

func adminPolicy(ctx context.Context, c *conn, args []string, sb *adminAnswer) {
	b := c.srv.b
	if len(args) < 2 || len(args[0]) > gearman.MaxFunctionSize {
		sb.WriteString(errArgs("policy"))
		return
	}
	name := args[0]
	if !b.KnownFunction(name) {
		sb.WriteString(errUnknownFunction(name))
		return
	}
	if len(args) == 2 && strings.EqualFold(args[1], "reset") {
		b.ResetPolicy(name)
		answerDurable(ctx, c, sb)
		return
	}
	p := b.Policy(name)
	for _, kv := range args[1:] {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			sb.WriteString(errInvalid("want key=value, got " + kv))
			return
		}
		if err := p.Set(strings.ToLower(k), v); err != nil {
			sb.WriteString(errInvalid(err.Error()))
			return
		}
	}
	if err := p.Validate(); err != nil {
		sb.WriteString(errInvalid(err.Error()))
		return
	}
	b.SetPolicy(name, p)
	answerDurable(ctx, c, sb)
}

func adminPause(ctx context.Context, c *conn, args []string, sb *adminAnswer) {
	b := c.srv.b
	if len(args) == 0 || len(args[0]) > gearman.MaxFunctionSize {
		sb.WriteString(errArgs("pause"))
		return
	}
	name, rest := args[0], args[1:]
	if !b.KnownFunction(name) {
		sb.WriteString(errUnknownFunction(name))
		return
	}
	if len(rest) > 0 && strings.EqualFold(rest[0], "until") {
		rest = rest[1:]
	}
	switch len(rest) {
	case 0:
		_ = b.Pause(name, time.Time{}) // refuses only an end that has passed
	case 1:
		if d, err := time.ParseDuration(rest[0]); err == nil && d > 0 {
			b.PauseFor(name, d)
			break
		}
		at, err := time.Parse(time.RFC3339, rest[0])
		if err != nil {
			sb.WriteString(errInvalid("pause until needs an RFC 3339 time or a positive duration"))
			return
		}
		if err := b.Pause(name, at); errors.Is(err, broker.ErrPauseEnded) {
			sb.WriteString(errInvalid("pause until needs a time in the future, not " + rest[0]))
			return
		}
	default:
		sb.WriteString(errArgs("pause"))
		return
	}
	answerDurable(ctx, c, sb)
}

// readable reports whether a job looked up (found: ok, or err) may be
// shown, answering the reason when not: the lookup's error, ERR
// UNKNOWN_JOB, or a denied read of function.
func (c *conn) readable(function string, ok bool, err error, a *adminAnswer) bool {
	switch {
	case err != nil:
		a.WriteString(errText(err))
		return false
	case !ok:
		a.WriteString(textUnknownJob)
		return false
	}
	return c.checkRead(function, a)
}

func adminDeadLetterShow(ctx context.Context, c *conn, args []string, sb *adminAnswer) {
	if len(args) != 1 {
		sb.WriteString(errArgs("deadletter"))
		return
	}
	d, ok, err := c.srv.b.DeadLetterByHandle(ctx, []byte(args[0]))
	if !c.readable(d.Function, ok, err, sb) {
		return
	}
	fmt.Fprintf(sb, "handle\t%s\nfunction\t%s\nunique\t%s\npriority\t%s\nattempts\t%d\ndied\t%s\nerror\t%s\npayload\t%s\n",
		d.Handle, adminText(d.Function), strconv.Quote(d.Unique), d.Priority, d.Attempts,
		fmtTime(d.DiedAt), strconv.Quote(d.LastError), strconv.Quote(string(d.Payload)))
	for i, at := range d.History {
		fmt.Fprintf(sb, "attempt\t%d\t%s\t%s\t%s\t%s\n", i+1, fmtNanos(at.Start), fmtNanos(at.End),
			at.Outcome, strconv.Quote(at.Error))
	}
	sb.WriteString(".\n")
}

func adminDeadLetterRetry(ctx context.Context, c *conn, args []string, sb *adminAnswer) {
	b := c.srv.b
	switch {
	case len(args) == 2 && strings.EqualFold(args[0], "all"):
		n, err := b.RetryDeadLetters(ctx, args[1])
		if err != nil {
			sb.WriteString(errText(err))
			return
		}
		fmt.Fprintf(sb, "OK %d\n", n)
	case len(args) == 1:
		if err := b.RetryDeadLetter(ctx, []byte(args[0])); err != nil {
			sb.WriteString(errText(err))
			return
		}
		sb.WriteString("OK 1\n")
	default:
		sb.WriteString(errArgs("deadletter"))
	}
}

func adminDeadLetterPurge(ctx context.Context, c *conn, args []string, sb *adminAnswer) {
	if len(args) != 1 {
		sb.WriteString(errArgs("deadletter"))
		return
	}
	n, err := c.srv.b.PurgeDeadLetters(ctx, args[0])
	if err != nil {
		sb.WriteString(errText(err))
		return
	}
	fmt.Fprintf(sb, "OK %d\n", n)
}

// result answers "result HANDLE" or "result unique:U" with "OK <length>",
// a newline, the raw WORK_COMPLETE data and a newline.
func adminResult(ctx context.Context, c *conn, args []string, sb *adminAnswer) {
	b := c.srv.b
	if len(args) != 1 {
		sb.WriteString(errArgs("result"))
		return
	}
	var (
		r   broker.Result
		ok  bool
		err error
	)
	if u, isUnique := strings.CutPrefix(args[0], "unique:"); isUnique {
		r, ok, err = b.ResultByUnique(ctx, "", u)
	} else {
		r, ok, err = b.Result(ctx, []byte(args[0]))
	}
	if !c.readable(r.Function, ok, err, sb) {
		return
	}
	fmt.Fprintf(sb, "OK %d\n", len(r.Data))
	sb.Write(r.Data)
	sb.WriteString("\n")
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func fmtNanos(ns int64) string {
	if ns == 0 {
		return "-"
	}
	return fmtTime(time.Unix(0, ns))
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// adminJobs answers "jobs [function=F] [state=S] [batch=B] [limit=N] [cursor=C]":
// one line per job record, HANDLE FUNCTION STATE ATTEMPTS SUBMITTED
// FINISHED "LAST-ERROR" CURSOR, newest first; a CURSOR continues the list
// after its line. Jobs of functions the grant may not read are left out.
func adminJobs(ctx context.Context, c *conn, args []string, sb *adminAnswer) {
	var q broker.JobQuery
	for _, arg := range args {
		k, v, ok := strings.Cut(arg, "=")
		switch {
		case ok && k == "function":
			q.Function = v
		case ok && k == "state":
			q.State = v
		case ok && k == "cursor":
			q.Cursor = v
		case ok && k == "batch":
			id, err := strconv.ParseUint(v, 10, 64)
			if err != nil || id == 0 {
				sb.WriteString(errInvalid(fmt.Sprintf("batch %q: use a batch id", v)))
				return
			}
			q.Batch = id
		case ok && k == "limit":
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 || n > broker.MaxJobPage {
				sb.WriteString(errInvalid(fmt.Sprintf("limit %q: use 1 to %d", v, broker.MaxJobPage)))
				return
			}
			q.Limit = n
		default:
			sb.WriteString(errInvalid(fmt.Sprintf("%q: use function=, state=, batch=, limit= or cursor=", arg)))
			return
		}
	}
	if q.Function != "" && !c.checkRead(q.Function, sb) {
		return
	}
	if q.Batch != 0 {
		// An unknown batch is an error, as over HTTP, not an empty list.
		if _, err := c.srv.b.Batch(ctx, q.Batch); err != nil {
			sb.WriteString(batchErrText(err))
			return
		}
	}
	// A page of ListJobs may stop short with more to come (a query that
	// matches few of many live jobs); this answer has no place for its
	// cursor, so it goes on until it has limit records or the list ends.
	limit := q.Limit
	if limit == 0 {
		limit = broker.DefaultJobPage
	}
	var jobs []broker.JobSnapshot
	for {
		page, err := c.srv.b.ListJobs(ctx, q)
		if err != nil {
			sb.WriteString(errInvalid(err.Error()))
			return
		}
		jobs = append(jobs, page.Jobs...)
		if page.Next == "" || len(jobs) >= limit || ctx.Err() != nil {
			break
		}
		q.Cursor, q.Limit = page.Next, limit-len(jobs)
	}
	for _, j := range jobs {
		if !c.mayRead(j.Function) {
			continue
		}
		fmt.Fprintf(sb, "%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", c.srv.b.Handle(j.Seq), adminText(j.Function), j.State, j.Attempts,
			fmtTime(j.Submitted), fmtTime(j.Finished), strconv.Quote(j.LastError), j.Cursor)
	}
	sb.WriteString(".\n")
}

// adminJob answers "job HANDLE": KEY VALUE lines of the job's record,
// then "attempt N START END OUTCOME WORKER "ERROR"" for each attempt.
func adminJob(ctx context.Context, c *conn, args []string, sb *adminAnswer) {
	if len(args) != 1 {
		sb.WriteString(errArgs("job"))
		return
	}
	b := c.srv.b
	seq, ok := b.ParseHandle([]byte(args[0]))
	var j broker.JobSnapshot
	if ok {
		j, ok = b.Job(ctx, seq)
	}
	if !ok && seq != 0 {
		// In shared mode: a job this server does not hold, or a dead letter
		// or retained result another server stored, as GET /v1/jobs reads it.
		var err error
		if j, ok, err = b.StoredJob(ctx, seq); err != nil {
			sb.WriteString(errText(err))
			return
		}
	}
	if !ok {
		sb.WriteString(textUnknownJob)
		return
	}
	if !c.checkRead(j.Function, sb) {
		return
	}
	fmt.Fprintf(sb, "handle\t%s\nfunction\t%s\nunique\t%s\npriority\t%s\nbackground\t%t\nstate\t%s\nfinal\t%t\n",
		b.Handle(j.Seq), adminText(j.Function), strconv.Quote(j.Unique), j.Priority, j.Background, j.State, j.Final)
	fmt.Fprintf(sb, "attempts\t%d\nsubmitted\t%s\nstarted\t%s\nfinished\t%s\nerror\t%s\n",
		j.Attempts, fmtTime(j.Submitted), fmtTime(j.Started), fmtTime(j.Finished), strconv.Quote(j.LastError))
	// The fields GET /v1/jobs/{handle} shows besides, under its names,
	// where the job has them.
	if j.RunAt != 0 {
		fmt.Fprintf(sb, "run_at\t%s\n", fmtTime(time.Unix(j.RunAt, 0)))
	}
	if j.State == "running" {
		fmt.Fprintf(sb, "progress\t%d/%d\n", j.Numerator, j.Denominator)
	}
	fmt.Fprintf(sb, "retries\t%d\n", j.Retries)
	if !j.Final {
		fmt.Fprintf(sb, "waiting_clients\t%d\n", j.Waiting)
	}
	if j.MaxAttempts != 0 {
		fmt.Fprintf(sb, "max_attempts\t%d\n", j.MaxAttempts)
	}
	if j.OrderingKey != "" {
		fmt.Fprintf(sb, "ordering_key\t%s\n", strconv.Quote(j.OrderingKey))
	}
	if !j.RetryAt.IsZero() {
		fmt.Fprintf(sb, "retry_at\t%s\n", fmtTime(j.RetryAt))
	}
	if j.Batch != 0 {
		fmt.Fprintf(sb, "batch\t%d\n", j.Batch)
	}
	if j.RetryOf != 0 {
		fmt.Fprintf(sb, "retry_of\t%s\n", b.Handle(j.RetryOf))
	}
	if len(j.After) > 0 {
		// The jobs it still waits for, handles separated by spaces.
		sb.WriteString("after\t")
		for i, seq := range j.After {
			if i > 0 {
				sb.WriteByte(' ')
			}
			sb.WriteString(b.Handle(seq))
		}
		sb.WriteByte('\n')
	}
	if j.CancelledBy != "" {
		fmt.Fprintf(sb, "cancelled_by\t%s\ncancelled_at\t%s\n", strconv.Quote(j.CancelledBy), fmtTime(j.CancelledAt))
	}
	if j.Final && (j.State == broker.FinalComplete || j.State == broker.FinalException) {
		fmt.Fprintf(sb, "result\t%s\nresult_truncated\t%t\n", strconv.Quote(string(j.Result)), j.ResultTruncated)
	}
	if j.Unstored {
		// Answered before the record was on disk (broker.Config.RecordReadWait).
		sb.WriteString("not_stored\ttrue\n")
	}
	if j.Final {
		fmt.Fprintf(sb, "payload\t%s\npayload_size\t%d\n", strconv.Quote(string(j.PayloadPreview)), j.PayloadSize)
	}
	for i, at := range j.History {
		fmt.Fprintf(sb, "attempt\t%d\t%s\t%s\t%s\t%s\t%s\n", i+1, fmtNanos(at.Start), fmtNanos(at.End),
			at.Outcome, adminText(dash(at.Worker)), strconv.Quote(at.Error))
	}
	sb.WriteString(".\n")
}

// adminRetryJob runs an ended job that did not succeed again
// (broker.RetryJob) and answers "OK <handle>" with the handle of the job
// that runs: a new one, or the dead letter queued again (as asked).
func adminRetryJob(ctx context.Context, c *conn, args []string, sb *adminAnswer) {
	if len(args) != 1 {
		sb.WriteString(errArgs("retry job"))
		return
	}
	seq, _, err := c.srv.b.RetryJob(ctx, []byte(args[0]), "admin "+c.remote)
	switch {
	case errors.Is(err, broker.ErrJobLive):
		sb.WriteString("ERR JOB_LIVE The+job+has+not+ended\r\n")
	case errors.Is(err, broker.ErrNotRetryable), errors.Is(err, broker.ErrPayloadNotKept):
		sb.WriteString("ERR NOT_RETRYABLE " + strings.ReplaceAll(err.Error(), " ", "+") + "\r\n")
	case err != nil:
		sb.WriteString(errText(err))
	default:
		h := c.srv.b.Handle(seq)
		if old, ok := c.srv.b.ParseHandle([]byte(args[0])); ok && old == seq {
			// The dead letter queued again: named as asked, which in
			// shared mode may be another server's handle of the job.
			h = args[0]
		}
		fmt.Fprintf(sb, "OK %s\n", h)
	}
}
