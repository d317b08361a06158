package gearmanapi

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
)

// A Gearman client uses batches without a new packet: it creates and
// closes a batch with the admin commands "batch create" and "batch close",
// and adds a background job to a batch by the unique id of its submit:
// "batch:ID" (the job has no unique) or "batch:ID:UNIQUE". Likewise a
// background job waits for others with the unique "after:SEQ,SEQ" (the
// numbers that end their handles; "after-anyway:" to run whatever their
// outcome), or "after:SEQ,SEQ:UNIQUE"; and for one job named by its
// unique, "after-unique:FUNCTION/UNIQUE" ("after-unique-anyway:..."), the
// job then having no unique of its own. Workers see ordinary jobs; the
// unique they are handed is the part after the prefix.

// batchUniquePrefix starts the unique id of a submit that joins a batch.
const batchUniquePrefix = "batch:"

// batchOfUnique splits a unique "batch:ID[:UNIQUE]" into the batch id and
// the job's own unique. ok is false for any other unique, also for one that
// starts with the prefix but names no id (a client that knows nothing of
// batches may send "batch:nightly"): that is an ordinary unique.
func batchOfUnique(u []byte) (id uint64, rest []byte, ok bool) {
	after, found := bytes.CutPrefix(u, []byte(batchUniquePrefix))
	if !found {
		return 0, u, false
	}
	idText, rest, _ := bytes.Cut(after, []byte(":"))
	id, err := strconv.ParseUint(string(idText), 10, 64)
	if err != nil || id == 0 {
		return 0, u, false
	}
	if len(rest) == 0 {
		rest = nil
	}
	return id, rest, true
}

// afterOfUnique splits a unique "after:SEQ[,SEQ...][:UNIQUE]" (or
// "after-anyway:...") into the jobs a submit waits for and the job's own
// unique. ok is false for any other unique, also for one that starts with
// the prefix but names no list of numbers ("after:lunch"): that is an
// ordinary unique.
func afterOfUnique(u []byte) (after []uint64, anyway bool, rest []byte, ok bool) {
	list, found := bytes.CutPrefix(u, []byte("after:"))
	if !found {
		if list, found = bytes.CutPrefix(u, []byte("after-anyway:")); !found {
			return nil, false, u, false
		}
		anyway = true
	}
	list, rest, _ = bytes.Cut(list, []byte(":"))
	for _, f := range bytes.Split(list, []byte(",")) {
		seq, err := strconv.ParseUint(string(f), 10, 64)
		if err != nil || seq == 0 {
			return nil, false, u, false
		}
		after = append(after, seq)
	}
	if len(rest) == 0 {
		rest = nil
	}
	return after, anyway, rest, true
}

// afterUniqueOfUnique reads a unique "after-unique:FUNCTION/UNIQUE" (or
// "after-unique-anyway:...") as the job a submit waits for. ok is false
// for any other unique, also for one with the prefix but without a
// function and a unique around a '/' ("after-unique:lunch"): that is an
// ordinary unique.
func afterUniqueOfUnique(u []byte) (dep broker.UniqueDep, anyway bool, ok bool) {
	ref, found := bytes.CutPrefix(u, []byte("after-unique:"))
	if !found {
		if ref, found = bytes.CutPrefix(u, []byte("after-unique-anyway:")); !found {
			return dep, false, false
		}
		anyway = true
	}
	fn, unique, found := bytes.Cut(ref, []byte("/"))
	if !found || len(fn) == 0 || len(unique) == 0 {
		return dep, false, false
	}
	return broker.UniqueDep{Function: string(fn), Unique: string(unique)}, anyway, true
}

// batchErrText is the admin answer for a batch operation's error.
func batchErrText(err error) string {
	if errors.Is(err, broker.ErrBatchNotFound) {
		return "ERR UNKNOWN_BATCH No+such+batch\r\n"
	}
	return "ERR BATCH_ERROR " + strings.ReplaceAll(adminText(err.Error()), " ", "+") + "\r\n"
}

// adminBatchCreate answers "batch create [on_success=FUNCTION]
// [on_complete=FUNCTION]" with "OK ID" once the batch is stored.
func adminBatchCreate(ctx context.Context, c *conn, args []string, a *adminAnswer) {
	var p broker.BatchParams
	for _, arg := range args {
		k, v, ok := strings.Cut(arg, "=")
		switch {
		case !ok || v == "":
			a.WriteString(errArgs("batch create"))
			return
		case k == "on_success":
			p.OnSuccess.Function = v
		case k == "on_complete":
			p.OnComplete.Function = v
		default:
			a.WriteString(errArgs("batch create"))
			return
		}
	}
	for _, fn := range callbackFunctions(p.OnSuccess, p.OnComplete) {
		// A callback is a submit the server makes later: its function
		// follows the rule of a submit's.
		if err := gearman.CheckFunctionName(fn); err != nil {
			a.WriteString(errInvalid("callback " + err.Error()))
			return
		}
	}
	if !c.checkSubmit(callbackFunctions(p.OnSuccess, p.OnComplete), a) {
		return
	}
	id, err := c.srv.b.CreateBatch(ctx, p)
	if err != nil {
		a.WriteString(batchErrText(err))
		return
	}
	fmt.Fprintf(a, "OK %d\n", id)
}

// batchOfArg returns the batch whose id is cmd's one argument. It answers
// the error itself, and returns false, for a bad argument or a batch the
// broker cannot give.
func batchOfArg(ctx context.Context, c *conn, cmd string, args []string, a *adminAnswer) (broker.BatchStatus, bool) {
	if len(args) != 1 {
		a.WriteString(errArgs(cmd))
		return broker.BatchStatus{}, false
	}
	id, err := strconv.ParseUint(args[0], 10, 64)
	if err != nil {
		a.WriteString(errArgs(cmd))
		return broker.BatchStatus{}, false
	}
	s, err := c.srv.b.Batch(ctx, id)
	if err != nil {
		a.WriteString(batchErrText(err))
		return broker.BatchStatus{}, false
	}
	return s, true
}

// adminBatchClose answers "batch close ID" with "OK" once the close is
// stored.
func adminBatchClose(ctx context.Context, c *conn, args []string, a *adminAnswer) {
	s, ok := batchOfArg(ctx, c, "batch close", args, a)
	// Closing may submit the callbacks: the closer must be allowed to.
	if !ok || !c.checkSubmit(callbackFunctions(s.OnSuccess, s.OnComplete), a) {
		return
	}
	if err := c.srv.b.CloseBatch(ctx, s.ID); err != nil {
		a.WriteString(batchErrText(err))
		return
	}
	a.WriteString("OK\n")
}

// adminBatch answers "batch ID" with the batch's counts, one "key\tvalue"
// line each, the callbacks and the handles of its first failed jobs.
func adminBatch(ctx context.Context, c *conn, args []string, a *adminAnswer) {
	s, ok := batchOfArg(ctx, c, "batch", args, a)
	if !ok {
		return
	}
	fmt.Fprintf(a, "batch\t%d\nclosed\t%t\ncomplete\t%t\ntotal\t%d\npending\t%d\nrunning\t%d\nsucceeded\t%d\nfailed\t%d\ndead\t%d\n",
		s.ID, s.Closed, s.Complete, s.Total, s.Pending, s.Running, s.Succeeded, s.Failed, s.Dead)
	if s.OnSuccess.Function != "" {
		fmt.Fprintf(a, "on_success\t%s\t%s\n", adminText(s.OnSuccess.Function), s.SuccessState())
	}
	if s.OnComplete.Function != "" {
		fmt.Fprintf(a, "on_complete\t%s\t%s\n", adminText(s.OnComplete.Function), s.CompleteState())
	}
	fmt.Fprintf(a, "created\t%s\ncompleted\t%s\n", fmtTime(s.Created), fmtTime(s.Completed))
	for _, h := range s.Failures {
		fmt.Fprintf(a, "failure\t%s\n", h)
	}
	a.WriteString(".\n")
}

// callbackFunctions returns the functions of the callbacks that are set.
func callbackFunctions(cbs ...broker.Callback) []string {
	var fns []string
	for _, cb := range cbs {
		if cb.Function != "" {
			fns = append(fns, cb.Function)
		}
	}
	return fns
}
