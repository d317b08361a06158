package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/gearmantest"
	"github.com/gearwork/gearwork/internal/testserver"
	"github.com/gearwork/gearwork/worker"
)

// openPTY opens a pseudo-terminal pair: what the command writes to the
// terminal (tty) is read from the master (ptm).
func openPTY(t *testing.T) (ptm, tty *os.File) {
	t.Helper()
	ptm, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, ptm.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		ptm.Close()
		t.Fatalf("unlocking the pseudo-terminal: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, ptm.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		ptm.Close()
		t.Fatalf("naming the pseudo-terminal: %v", e)
	}
	tty, err = os.OpenFile("/dev/pts/"+strconv.Itoa(int(n)), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		ptm.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { ptm.Close(); tty.Close() })
	return ptm, tty
}

// runOnTTY runs the binary with stdout (or stderr) on a terminal and the
// other stream on a pipe, and returns what each received.
func runOnTTY(t *testing.T, bin string, stderrOnTTY bool, args ...string) (ttyOut, other string) {
	t.Helper()
	ptm, tty := openPTY(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var buf bytes.Buffer
	if stderrOnTTY {
		cmd.Stdout, cmd.Stderr = &buf, tty
	} else {
		cmd.Stdout, cmd.Stderr = tty, &buf
	}
	read := make(chan []byte)
	go func() {
		var out bytes.Buffer
		_, _ = io.Copy(&out, ptm) // ends with EIO once no one holds the terminal
		read <- out.Bytes()
	}()
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	require.NoError(t, err, "gearwork %v: %s", args, buf.String())
	tty.Close()
	return string(<-read), buf.String()
}

// TestSubmitNewlineOnTerminal: on a terminal, a result without a final
// newline gets one (the terminal shows it as \r\n); on a pipe the bytes
// stay exact (TestClientCommands).
func TestSubmitNewlineOnTerminal(t *testing.T) {
	t.Parallel()
	bin := testserver.Binary(t)
	addr := gearmantest.Start(t).Addr()
	cliWorker(t, addr, "", map[string]worker.HandlerFunc{
		"reverse": func(_ context.Context, j *worker.Job) ([]byte, error) {
			out := bytes.Clone(j.Payload)
			for i, k := 0, len(out)-1; i < k; i, k = i+1, k-1 {
				out[i], out[k] = out[k], out[i]
			}
			return out, nil
		},
	})
	out, _ := runOnTTY(t, bin, false, "submit", "--servers", addr, "reverse", "hello")
	require.Equal(t, "olleh\r\n", out)
	out, _ = runOnTTY(t, bin, false, "submit", "--servers", addr, "reverse", "\nlined")
	require.Equal(t, "denil\r\n", out, "a result that ends with a newline gets no second one")
}

// TestBenchProgressOnTerminal: with stderr on a terminal, bench draws its
// progress line there (and erases it); stdout keeps only the results.
func TestBenchProgressOnTerminal(t *testing.T) {
	t.Parallel()
	bin := testserver.Binary(t)
	addr := gearmantest.Start(t).Addr()
	errOut, out := runOnTTY(t, bin, true, "bench", "--servers", addr, "--scenario", "echo", "--jobs", "100")
	require.Contains(t, errOut, "\r\x1b[K", "the progress line is erased at the end")
	require.Contains(t, errOut, "echo    100 echoes in")
	require.Regexp(t, `^scenario=echo `, out)
}
