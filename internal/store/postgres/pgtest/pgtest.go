// Package pgtest starts a private PostgreSQL server for tests and hands
// each test its own schema in it.
//
// The server is Debian's (or any) PostgreSQL found in /usr/lib/postgresql/*/bin
// or on PATH: initdb into a temporary directory, then postgres listening
// only on a Unix socket inside that directory (no TCP port, nothing global).
// When the process runs as root, initdb and postgres run as the "postgres"
// user, which owns the directory. The server is a child process that dies
// with the test binary (parent-death signal), and Stop removes everything.
//
// Set GEARWORK_TEST_POSTGRES to a connection URL to use an existing server
// instead; each test still gets its own schema there. When no PostgreSQL
// is installed, tests fail (scripts/deps.sh installs it), unless
// GEARWORK_ALLOW_SKIP=1 is set, in which case they are skipped.
//
// API is not stable: this package is internal to Gearwork.
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Options configure a Server.
type Options struct {
	// Durable keeps PostgreSQL's fsync on (benchmarks). The zero value
	// turns fsync off, which is enough for tests and much faster.
	Durable bool
	// Settings are extra "name=value" server settings.
	Settings []string
}

// Server is a PostgreSQL server started by Start.
type Server struct {
	// URL connects to the server's "postgres" database as the superuser.
	URL string

	dir  string
	argv []string // postgres and its arguments
	cred *syscall.Credential
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	once sync.Once
}

// launch starts postgres on the server's data directory, appending to its
// log.
func (s *Server) launch() error {
	logf, err := os.OpenFile(filepath.Join(s.dir, "postgres.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("pgtest: %w", err)
	}
	cmd := exec.Command(s.argv[0], s.argv[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred, Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("pgtest: starting postgres: %w", err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(done)
	}()
	s.cmd, s.done = cmd, done
	return nil
}

// Restart stops the server and starts it again on the same data, for tests
// of what clients do while the database is away: with crash, every process
// of the server gets SIGKILL (PostgreSQL then recovers from its
// write-ahead log as after a crash; run it with synchronous_commit=on so
// that no committed transaction is lost); without it, a fast shutdown.
// down is how long it stays stopped.
func (s *Server) Restart(ctx context.Context, crash bool, down time.Duration) error {
	if crash {
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	} else {
		_ = s.cmd.Process.Signal(syscall.SIGINT)
	}
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.done
	}
	if crash {
		// The backends are in the postmaster's process group; wait until
		// they are gone too, or the new postmaster finds them attached
		// to the shared memory.
		for syscall.Kill(-s.cmd.Process.Pid, 0) == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
	select {
	case <-time.After(down):
	case <-ctx.Done():
		return ctx.Err()
	}
	if err := s.launch(); err != nil {
		return err
	}
	return s.waitReady(ctx)
}

// ErrNotInstalled is returned by Start when no PostgreSQL binaries are found.
var ErrNotInstalled = errors.New("pgtest: PostgreSQL is not installed (no initdb found)")

// binDir finds the directory holding initdb and postgres, newest version
// first.
func binDir() (string, error) {
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(a, b int) bool { return pgVersion(dirs[a]) > pgVersion(dirs[b]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", ErrNotInstalled
}

func pgVersion(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

// Start initialises a new database cluster in a temporary directory and
// starts a server on a Unix socket in it. Stop it with Stop.
func Start(ctx context.Context, opts Options) (*Server, error) {
	bin, err := binDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "gearwork-pg-")
	if err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	s := &Server{dir: dir}
	cred, err := credential(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	data := filepath.Join(dir, "data")
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("pgtest: initdb: %w\n%s", err, out)
	}
	args := []string{"-D", data, "-k", dir, "-c", "listen_addresses=",
		"-c", "max_connections=300", "-c", "shared_buffers=64MB"}
	if !opts.Durable {
		args = append(args, "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off")
	}
	for _, kv := range opts.Settings {
		args = append(args, "-c", kv)
	}
	s.argv = append([]string{filepath.Join(bin, "postgres")}, args...)
	s.cred = cred
	if err := s.launch(); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	s.URL = "postgres://postgres@/postgres?host=" + url.QueryEscape(dir) + "&sslmode=disable"
	if err := s.waitReady(ctx); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// credential returns the user to run PostgreSQL as: nil (the current user)
// unless running as root, when it is "postgres", who is given dir.
func credential(dir string) (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("pgtest: running as root needs a postgres user to run PostgreSQL as: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		return nil, fmt.Errorf("pgtest: %w", err)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}, nil
}

func (s *Server) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		conn, err := pgx.Connect(ctx, s.URL)
		if err == nil {
			_ = conn.Close(ctx)
			return nil
		}
		select {
		case <-s.done:
			return fmt.Errorf("pgtest: postgres exited during start-up:\n%s", s.Log())
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pgtest: postgres did not accept connections within a minute: %w\n%s", err, s.Log())
		}
	}
}

// Log returns the server's log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "postgres.log"))
	return string(b)
}

// Stop stops the server (fast shutdown) and removes its directory. Safe to
// call twice.
func (s *Server) Stop() {
	s.once.Do(func() {
		if s.cmd != nil && s.cmd.Process != nil {
			_ = s.cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-s.done:
			case <-time.After(30 * time.Second):
				_ = s.cmd.Process.Kill()
				<-s.done
			}
		}
		_ = os.RemoveAll(s.dir)
	})
}

var (
	sharedMu  sync.Mutex
	shared    *Server
	sharedErr error
	schemaN   atomic.Int64
)

// sharedURL returns the URL of the package-wide server, starting it on
// first use.
func sharedURL(ctx context.Context) (string, error) {
	if u := os.Getenv("GEARWORK_TEST_POSTGRES"); u != "" {
		return u, nil
	}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		shared, sharedErr = Start(ctx, Options{})
	}
	if sharedErr != nil {
		return "", sharedErr
	}
	return shared.URL, nil
}

// Main runs the package's tests and then stops the server that Schema or
// URL started, if any. Call it from TestMain:
//
//	func TestMain(m *testing.M) { pgtest.Main(m) }
func Main(m *testing.M) {
	code := m.Run()
	Cleanup()
	os.Exit(code)
}

// Cleanup stops the server that Schema or URL started, if any; for a
// TestMain that has more to clean up than Main does.
func Cleanup() {
	sharedMu.Lock()
	if shared != nil {
		shared.Stop()
		shared = nil
	}
	sharedMu.Unlock()
}

// required reports whether a missing PostgreSQL fails the test instead of
// skipping it: always, unless the developer opted into skipping the tests
// whose tools are missing, as for every other tool the tests need.
func required() bool {
	return os.Getenv("GEARWORK_ALLOW_SKIP") != "1"
}

// URL returns the URL of the package-wide server (started on first use)
// without creating a schema. It skips or fails t when PostgreSQL is not
// installed.
func URL(t testing.TB) string {
	t.Helper()
	u, err := sharedURL(context.Background())
	if errors.Is(err, ErrNotInstalled) && !required() {
		t.Skip(err.Error() + "; skipped because GEARWORK_ALLOW_SKIP=1")
	}
	if errors.Is(err, ErrNotInstalled) {
		t.Fatal(err.Error() + ": run scripts/deps.sh (or set GEARWORK_ALLOW_SKIP=1 to skip)")
	}
	if err != nil {
		t.Fatal(err)
	}
	return u
}

var unsafeChars = regexp.MustCompile(`[^a-z0-9_]+`)

// Schema creates a new, empty schema for t in the package-wide server and
// returns a URL whose connections use it (search_path). The schema is
// dropped when t ends. It skips or fails t when PostgreSQL is not
// installed.
func Schema(t testing.TB) string {
	t.Helper()
	base := URL(t)
	name := uniqueName(t, "t")
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer conn.Close(ctx)
	ident := pgx.Identifier{name}.Sanitize()
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+ident); err != nil {
		t.Fatalf("pgtest: create schema: %v", err)
	}
	t.Cleanup(func() {
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("pgtest: %v", err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+ident+" CASCADE"); err != nil {
			t.Errorf("pgtest: drop schema: %v", err)
		}
	})
	return WithSchema(base, name)
}

// uniqueName returns a name for a schema or database of t, unique in the
// process: prefix, a number, the test's name.
func uniqueName(t testing.TB, prefix string) string {
	name := unsafeChars.ReplaceAllString(strings.ToLower(t.Name()), "_")
	if len(name) > 40 {
		name = name[len(name)-40:]
	}
	return fmt.Sprintf("%s%d_%s", prefix, schemaN.Add(1), strings.Trim(name, "_"))
}

// Database creates a new, empty database for t in the package-wide server
// and returns a URL that connects to it; the database is dropped when t
// ends. A test that reads its database's statistics (pg_stat_database)
// needs one: the schemas of Schema share one database with every other
// test. It skips or fails t when PostgreSQL is not installed.
func Database(t testing.TB) string {
	t.Helper()
	base := URL(t)
	p, err := url.Parse(base)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	name := uniqueName(t, "d")
	ident := pgx.Identifier{name}.Sanitize()
	Exec(t, base, "CREATE DATABASE "+ident)
	t.Cleanup(func() { Exec(t, base, "DROP DATABASE "+ident+" WITH (FORCE)") })
	p.Path = "/" + name
	return p.String()
}

// WithSchema returns u with its connections' search_path set to schema.
func WithSchema(u, schema string) string {
	p, err := url.Parse(u)
	if err != nil {
		return u
	}
	q := p.Query()
	q.Set("search_path", schema)
	p.RawQuery = q.Encode()
	return p.String()
}

// Exec runs SQL statements against the URL; a helper for tests that need
// to look at or damage the database directly.
func Exec(t testing.TB, u, sql string, args ...any) {
	t.Helper()
	withConn(t, u, sql, func(ctx context.Context, conn *pgx.Conn) error {
		_, err := conn.Exec(ctx, sql, args...)
		return err
	})
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return string(bytes.TrimSpace([]byte(s)))
}

// QueryRow runs a query that returns one row and scans it into dest.
func QueryRow(t testing.TB, u, sql string, dest ...any) {
	t.Helper()
	withConn(t, u, sql, func(ctx context.Context, conn *pgx.Conn) error {
		return conn.QueryRow(ctx, sql).Scan(dest...)
	})
}

// withConn runs sql with run on a connection of its own to u, and fails
// the test if it cannot connect or run fails.
func withConn(t testing.TB, u, sql string, run func(ctx context.Context, conn *pgx.Conn) error) {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer conn.Close(ctx)
	if err := run(ctx, conn); err != nil {
		t.Fatalf("pgtest: %s: %v", firstLine(sql), err)
	}
}
