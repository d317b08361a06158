package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/gearwork/gearwork/gearman"
)

// Batches (docs/batches.md) are a Gearwork extension: a group of
// background jobs whose callbacks, ordinary jobs of the functions named
// here, are submitted exactly once when all of them are done. A batch lives
// on the server that created it: with several servers, use a Client of that
// server alone for a batch's jobs.

// BatchOptions names the callbacks of a new batch; an empty name means
// none.
type BatchOptions struct {
	// OnSuccess is submitted once when every job of the batch completed
	// successfully.
	OnSuccess string
	// OnComplete is submitted once when every job of the batch has
	// finished, whatever the outcome.
	OnComplete string
}

// ErrBatch is wrapped by the errors of CreateBatch and CloseBatch that the
// server answered (an unknown batch, a refused command).
var ErrBatch = errors.New("batch refused")

// CreateBatch creates an open batch on the Client's first server and
// returns its id once the server stored it. Add background jobs to it with
// BatchUnique, and close it with CloseBatch.
func (c *Client) CreateBatch(ctx context.Context, opts BatchOptions) (string, error) {
	line := "batch create"
	for _, cb := range [...]struct{ key, fn string }{{"on_success", opts.OnSuccess}, {"on_complete", opts.OnComplete}} {
		if strings.ContainsAny(cb.fn, " \t\r\n") {
			return "", fmt.Errorf("%w: %s function %q has white space", ErrInvalidRequest, cb.key, cb.fn)
		}
		if cb.fn != "" {
			line += " " + cb.key + "=" + cb.fn
		}
	}
	answer, err := c.adminLine(ctx, line)
	if err != nil {
		return "", err
	}
	return strings.TrimPrefix(answer, "OK "), nil
}

// CloseBatch closes a batch: once every job of it has finished, the server
// submits its callbacks (at once for a batch without jobs). It returns once
// the close is stored.
func (c *Client) CloseBatch(ctx context.Context, batch string) error {
	if batch == "" || strings.ContainsAny(batch, " \t\r\n") {
		return fmt.Errorf("%w: batch id %q", ErrInvalidRequest, batch)
	}
	_, err := c.adminLine(ctx, "batch close "+batch)
	return err
}

// adminLine sends one admin text line to the first server on a connection
// of its own and returns the answer's line, which must start with "OK".
func (c *Client) adminLine(ctx context.Context, line string) (string, error) {
	addr := c.servers[0].addr
	nc, err := c.dial.DialFunc(ctx, "tcp", addr)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrNoServer, addr, err)
	}
	defer nc.Close()
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	_ = nc.SetDeadline(deadline)
	if _, err := nc.Write([]byte(line + "\n")); err != nil {
		return "", fmt.Errorf("%s: %s: %w", addr, line, err)
	}
	answer, err := bufio.NewReader(nc).ReadString('\n')
	if err != nil {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		return "", fmt.Errorf("%s: %s: %w", addr, line, err)
	}
	answer = strings.TrimRight(answer, "\r\n")
	if !strings.HasPrefix(answer, "OK") {
		return "", fmt.Errorf("%w: %s: %s", ErrBatch, addr, strings.ReplaceAll(answer, "+", " "))
	}
	return answer, nil
}

// BatchUnique returns the unique id that adds a background job to the
// batch with id batch on a Gearwork server (docs/batches.md): "batch:ID",
// or "batch:ID:UNIQUE" when the job has a unique of its own (the worker is
// handed UNIQUE; the whole must fit in a unique's 64 bytes). A foreground
// submit, an unknown batch or one that has completed is refused with an
// error.
func BatchUnique(batch, unique string) string {
	if unique == "" {
		return "batch:" + batch
	}
	return "batch:" + batch + ":" + unique
}

// AfterUnique returns the unique id that makes a background job wait on a
// Gearwork server for the jobs with the given handles (docs/batches.md,
// "Dependencies"): "after:SEQ,SEQ" with the numbers that end the handles
// ("after-anyway:" when anyway: it runs whatever their outcome), followed
// by ":UNIQUE" when the job has a unique of its own. The whole must fit in
// a unique's 64 bytes. The jobs must be on the server the job goes to.
func AfterUnique(handles []string, anyway bool, unique string) (string, error) {
	if len(handles) == 0 {
		return "", fmt.Errorf("%w: no job to wait for", ErrInvalidRequest)
	}
	seqs := make([]string, len(handles))
	for i, h := range handles {
		n := h[strings.LastIndexByte(h, ':')+1:]
		if n == "" || strings.Trim(n, "0123456789") != "" {
			return "", fmt.Errorf("%w: %q is not a job handle", ErrInvalidRequest, h)
		}
		seqs[i] = n
	}
	u := "after:" + strings.Join(seqs, ",")
	if anyway {
		u = "after-anyway:" + strings.Join(seqs, ",")
	}
	if unique != "" {
		u += ":" + unique
	}
	return u, nil
}

// AfterJobUnique returns the unique id that makes a background job wait on
// a Gearwork server for the live job of function that has unique
// (docs/batches.md, "Dependencies"): "after-unique:FUNCTION/UNIQUE"
// ("after-unique-anyway:" when anyway: it runs whatever that job's
// outcome). The job that waits has no unique of its own. A retained
// result with that unique counts as a job that completed; with neither,
// the server refuses the submit. The whole must fit in a unique's 64
// bytes, and function must not contain '/' (name such jobs over HTTP,
// ?after-unique).
func AfterJobUnique(function, unique string, anyway bool) (string, error) {
	if function == "" || unique == "" || strings.Contains(function, "/") {
		return "", fmt.Errorf("%w: name the job as FUNCTION/UNIQUE, with a function without '/' (got %q, %q)",
			ErrInvalidRequest, function, unique)
	}
	u := "after-unique:" + function + "/" + unique
	if anyway {
		u = "after-unique-anyway:" + function + "/" + unique
	}
	if len(u) > gearman.MaxUniqueSize {
		return "", fmt.Errorf("%w: %q is longer than a unique's %d bytes", ErrInvalidRequest, u, gearman.MaxUniqueSize)
	}
	return u, nil
}
