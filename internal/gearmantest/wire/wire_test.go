package wire_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"runtime"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/gearmantest/wire"
)

// recordingTB is a testing.TB that records a failure instead of failing
// the test; the failure ends the goroutine that made it, as it ends a
// test's. Only what ExpectClosed calls is implemented.
type recordingTB struct {
	testing.TB
	failure string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Name() string { return "recording" }

func (r *recordingTB) Errorf(format string, args ...any) {
	r.failure += fmt.Sprintf(format, args...)
}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

func (r *recordingTB) FailNow() {
	if r.failure == "" {
		r.failure = "FailNow"
	}
	runtime.Goexit()
}

// expectClosed runs ExpectClosed(before) on a TCP connection, as client
// wraps it, after server had its end, and returns its failure ("": none).
func expectClosed(t *testing.T, before string, server func(*net.TCPConn), client func(net.Conn) net.Conn) string {
	t.Helper()
	nc, sc := wire.Pair(t)
	server(sc.(*net.TCPConn))
	nc = client(nc)
	rec := &recordingTB{}
	c := &wire.Conn{T: rec, NC: nc, R: bufio.NewReader(nc)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.ExpectClosed(before)
	}()
	<-done
	return rec.failure
}

// ExpectClosed takes the end of the stream and a reset for the server's
// close, and fails on any other error of the read: one that does not say
// the server closed the connection.
func TestExpectClosedAcceptsOnlyAClose(t *testing.T) {
	t.Parallel()
	plain := func(nc net.Conn) net.Conn { return nc }
	sends := func(sent string, andClose bool) func(*net.TCPConn) {
		return func(sc *net.TCPConn) {
			_, err := sc.Write([]byte(sent))
			require.NoError(t, err)
			if andClose {
				require.NoError(t, sc.Close())
			}
		}
	}
	resets := func(sc *net.TCPConn) {
		require.NoError(t, sc.SetLinger(0)) // Close sends a reset
		require.NoError(t, sc.Close())
	}
	require.Empty(t, expectClosed(t, "bye", sends("bye", true), plain), "closed after it sent bye")
	require.Empty(t, expectClosed(t, "", resets, plain), "reset")
	require.Contains(t, expectClosed(t, "", sends("more", true), plain), "what the server sent before it closed",
		"closed after it sent more than expected")
	// A TLS client that reads what is not TLS gets an error that says
	// nothing of a close (and the server has not closed).
	overTLS := func(nc net.Conn) net.Conn { return tls.Client(nc, &tls.Config{InsecureSkipVerify: true}) }
	require.Contains(t, expectClosed(t, "", sends("HTTP/1.0 400 Bad Request\r\n\r\n", false), overTLS), "not a close",
		"a TLS error")
}

// Admin returns an answer's first line without its ending; AdminList
// returns a list's lines up to ".\n", keeping a "\r" that a line has.
func TestAdminAnswers(t *testing.T) {
	t.Parallel()
	dialed, accepted := wire.Pair(t)
	c := wire.New(t, dialed)
	got := make(chan string, 2)
	go func() {
		defer close(got)
		r := bufio.NewReader(accepted)
		for _, answer := range []string{"OK\r\n", "a\tb\n\r\n.\n"} {
			l, err := r.ReadString('\n')
			if err != nil {
				return
			}
			got <- l
			if _, err := accepted.Write([]byte(answer)); err != nil {
				return
			}
		}
	}()
	require.Equal(t, "OK", c.Admin("version"))
	require.Equal(t, []string{"a\tb", "\r"}, c.AdminList("status"))
	require.Equal(t, "version\n", <-got)
	require.Equal(t, "status\n", <-got)
}
