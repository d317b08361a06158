package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/gcpace"
	"github.com/gearwork/gearwork/internal/gearmanapi"
)

type serveConfig struct {
	listen          string
	store           storeConfig
	maxPacket       int
	jobRetries      int
	logLevel        string
	logFormat       string
	shutdownTimeout time.Duration
	handlePrefix    string
	configFile      string
	http            httpFlags
	sec             securityConfig
	pprof           string
	memoryLimit     string
	insertDelay     time.Duration
	batchRetention  time.Duration
	// set holds the flags given a value other than their default, on the
	// command line or in GEARWORK_* variables.
	set map[string]bool
}

func runServe(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) error {
	var cfg serveConfig
	fs := newFlagSet("serve", "serve [flags]", stderr)
	fs.StringVar(&cfg.listen, "listen", "127.0.0.1:4730", "`address` of the Gearman port (binary protocol and text admin commands)")
	fs.StringVar(&cfg.store.url, "store", defaultStore, "where background jobs are kept: "+storeHelp)
	fs.StringVar(&cfg.store.sync, "sync", "always", syncHelp)
	fs.StringVar(&cfg.store.memoryBudget, "memory-budget", "", budgetHelp)
	fs.StringVar(&cfg.memoryLimit, "memory-limit", "", memoryLimitHelp)
	durationVar(fs, &cfg.insertDelay, "insert-delay", 20*time.Millisecond, "PostgreSQL store: how long a new short background job that this server's workers run waits for its insert (up to 5 times as long while it is expected to queue longer); one that ends sooner is never written, and its submitter is answered when it ends (0: insert at once)")
	fs.DurationVar(&cfg.batchRetention, "batch-retention", broker.DefaultBatchRetention, "how long a completed batch is kept (its status answered) after its callbacks were submitted; 0 keeps them forever; negative is refused (docs/batches.md)")
	cfg.maxPacket = 64 << 20
	fs.Var(sizeValue[int]{&cfg.maxPacket}, "max-packet", "largest packet body, a `size` such as 64MiB (or 67108864), at most 1GiB (256MiB with a PostgreSQL store); a larger packet gets an ERROR and the connection is closed")
	fs.IntVar(&cfg.jobRetries, "job-retries", 0, "fail a job (WORK_FAIL) when it has been taken back from a vanished or timed-out worker this many `times`; 0 means no limit (gearmand 1.1 semantics)")
	fs.StringVar(&cfg.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&cfg.logFormat, "log-format", "text", "log `format`: text (key=value) or json (one object a line)")
	durationVar(fs, &cfg.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long a graceful stop (SIGUSR1 or \"shutdown graceful\") waits for running jobs")
	fs.StringVar(&cfg.configFile, "config", "", "YAML `file` with per-function lifecycle policies and cron schedules (docs/lifecycle.md)")
	fs.StringVar(&cfg.handlePrefix, "handle-prefix", "", "`prefix` of job handles, at most 46 bytes, so that a handle fits the 63 bytes libgearman keeps (default \"H:<hostname>:\", with the host name up to its first dot when the whole is longer)")
	cfg.http.register(fs)
	cfg.sec.register(fs)
	fs.StringVar(&cfg.pprof, "pprof", "", "debugging: serve Go profiles (/debug/pprof/) on this `address`; off when empty")
	if err := parseFlagsNoArgs(fs, args); err != nil {
		return err
	}
	cfg.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) {
		// A flag given its default value (an empty variable left by an
		// environment template, a script's --sync always) changes
		// nothing: only another value is refused where it would be
		// ignored.
		if f.Value.String() != f.DefValue {
			cfg.set[f.Name] = true
		}
	})
	if err := checkServeConfig(ctx, &cfg); err != nil {
		return err
	}
	level, _ := parseLogLevel(cfg.logLevel)
	log, _ := newLogger(stderr, cfg.logFormat, level)
	return serve(ctx, cfg, level, log)
}

// serve runs the server until ctx ends or it is told to stop: it checks
// and loads the configuration (prepareServe), opens the store and starts
// the broker (startBroker), starts the front ends (startFrontEnds), and
// waits for the end and stops in order (runUntilStopped).
func serve(ctx context.Context, cfg serveConfig, level slog.Level, log *slog.Logger) error {
	setup, err := prepareServe(ctx, cfg, log)
	if err != nil {
		return err
	}
	cfg.store.maxOpenFiles = setup.storeFiles
	st, err := openStore(ctx, cfg.store, log)
	if err != nil {
		return err
	}
	defer func() {
		if err := st.Close(); err != nil {
			log.Error("serve: closing store", slog.String("error", err.Error()))
		}
	}()
	pacer := newPacer(log)
	defer pacer.Stop()
	var fe *frontEnds
	procs := newProcPacer(log, func() uint64 { return fe.srv.Requests() }) // started once fe is
	b, err := startBroker(ctx, cfg, setup, st, log, pacer)
	if err != nil {
		return err
	}
	defer b.Stop()
	fe, err = startFrontEnds(ctx, cfg, setup, b, level, log)
	if err != nil {
		return err
	}
	defer fe.stopPprof()
	// From here on the processor count may be one: whatever sizes itself
	// by it (Pebble's caches, pgx's pool) was opened above.
	procs.Start(ctx)
	defer procs.Stop()
	return fe.runUntilStopped(ctx, cfg, b, log)
}

// serveSetup is the checked configuration of a server about to start.
type serveSetup struct {
	sec      *security
	http     *httpSetup
	budget   int64 // broker.Config.MemoryBudget
	maxConns int   // gearmanapi.Config.MaxConnections
	// storeFiles is storeConfig.maxOpenFiles: the files the store may keep
	// open within the descriptor reserve.
	storeFiles int
	startedAt  time.Time
}

// prepareServe checks what the server would expose and loads the security,
// HTTP and resource settings, before anything is opened.
func prepareServe(ctx context.Context, cfg serveConfig, log *slog.Logger) (*serveSetup, error) {
	sec, err := cfg.sec.load(cfg.configFile)
	if err != nil {
		return nil, err
	}
	if err := checkExposure(ctx, gearmanPort(cfg.listen), sec.authenticated(), cfg.sec.insecure, log); err != nil {
		return nil, err
	}
	httpSetup, err := cfg.http.load(cfg.sec.tls, cfg.sec.handshakeTimeout, cfg.sec.insecure)
	if err != nil {
		return nil, err
	}
	if httpSetup != nil {
		if err := checkExposure(ctx, httpPort(httpSetup.addr), httpSetup.authenticated(), cfg.sec.insecure, log); err != nil {
			return nil, err
		}
	}
	if cfg.pprof != "" {
		if err := checkExposure(ctx, pprofPort(cfg.pprof), false, cfg.sec.insecure, log); err != nil {
			return nil, err
		}
	}
	budget, err := parseMemoryBudget(cfg.store.memoryBudget)
	if err != nil {
		return nil, err
	}
	if _, err := applyMemoryLimit(cfg.memoryLimit, log); err != nil {
		return nil, err
	}
	fileLimit, err := raiseFileLimit()
	if err != nil {
		return nil, err
	}
	files, err := shareFiles(cfg.sec.maxConnections, cfg.http.maxConns, httpSetup != nil, fileLimit, log)
	if err != nil {
		return nil, err
	}
	if httpSetup != nil {
		httpSetup.maxConns = files.httpConns
	}
	return &serveSetup{sec: sec, http: httpSetup, budget: budget, maxConns: files.conns, storeFiles: files.storeFiles}, nil
}

// maxHandlePrefix is the longest handle prefix: libgearman (the C library
// under PHP's extension and the gearman tool) keeps a job handle in 64
// bytes with its NUL, and its clients and workers never see the end of a
// job whose handle is longer, so a prefix leaves room for the job's number
// in up to 17 digits within gearman.MaxHandleSize. Numbers start at the
// server's start time in microseconds (16 digits until the year 2286) and
// in shared mode at 1, so a prefix of up to 46 bytes, which worked before
// there was a limit, still does.
const maxHandlePrefix = gearman.MaxHandleSize - 17

// defaultHandlePrefix is "H:<host>:" for the host name host (a ':' in it
// taken for '_'), with the host name up to its first dot when the whole
// would be longer than maxHandlePrefix (a cloud machine's name such as
// ip-172-31-45-123.ap-southeast-2.compute.internal), cut to fit if still
// too long. earlier is then the prefix with the whole name, which the
// server's handles had before they were kept short: those handles still
// name their jobs (broker.Config.HandlePrefixAliases).
func defaultHandlePrefix(host string) (prefix, earlier string) {
	host = strings.ReplaceAll(host, ":", "_")
	const room = maxHandlePrefix - len("H::")
	if len(host) <= room {
		return "H:" + host + ":", ""
	}
	short := host
	if label, _, ok := strings.Cut(host, "."); ok && label != "" {
		short = label
	}
	short = short[:min(len(short), room)]
	return "H:" + short + ":", "H:" + host + ":"
}

// handlePrefixes returns the prefix of job handles, given (--handle-prefix)
// or the default for the host name host, and the prefixes that handles
// given out before may have instead (broker.Config.HandlePrefixAliases).
func handlePrefixes(given, host string) (string, []string) {
	if given != "" {
		return given, nil
	}
	prefix, earlier := defaultHandlePrefix(host)
	if earlier == "" {
		return prefix, nil
	}
	return prefix, []string{earlier}
}

// startBroker configures the broker on the store and starts it (replaying
// or joining the store), and starts pacer (which may be nil) on the
// broker's payloads kept in memory. The caller stops both.
func startBroker(ctx context.Context, cfg serveConfig, setup *serveSetup, st openedStore, log *slog.Logger, pacer *gcpace.Pacer) (*broker.Broker, error) {
	host, _ := os.Hostname()
	prefix, aliases := handlePrefixes(cfg.handlePrefix, host)
	bcfg := broker.Config{HandlePrefix: prefix, HandlePrefixAliases: aliases, JobRetries: cfg.jobRetries, Logger: log,
		MaxQueuedBytes: cfg.sec.maxQueuedBytes, MemoryBudget: setup.budget, EarlyInsertDelay: cfg.insertDelay,
		BatchRetention: cfg.batchRetention}
	if cfg.batchRetention == 0 {
		bcfg.BatchRetention = -1 // forever
	}
	if cfg.insertDelay <= 0 {
		bcfg.EarlyInsertDelay = -1 // none
	}
	bcfg.MaxFunctions, bcfg.MaxWorkerFunctions = noLimit(cfg.sec.maxFunctions), noLimit(cfg.sec.maxWorkerFns)
	bcfg.MaxOpenBatches = noLimit(cfg.sec.maxOpenBatches)
	bcfg.MaxRecordBytes = noLimit(cfg.sec.maxRecordBytes)
	if err := applyConfigFile(&bcfg, cfg.configFile, setup.sec.rules(), log); err != nil {
		return nil, err
	}
	st.configure(&bcfg)
	b := broker.New(bcfg)
	pacer.Start(ctx, b.PayloadBytesInMemory) // replay fills the budget already
	setup.startedAt = time.Now()
	if err := b.Start(ctx); err != nil {
		return nil, explainStoreError(err)
	}
	return b, nil
}

// frontEnds are the running Gearman and HTTP front ends of a server.
type frontEnds struct {
	srv       *gearmanapi.Server
	http      *httpFrontEnd
	serveErr  chan error
	shutdown  chan bool // from the admin "shutdown" command: graceful or not
	stopPprof func()
	// addr is the Gearman port's address; setup what SIGHUP reloads.
	addr  string
	setup *serveSetup
}

// startFrontEnds listens on the Gearman port (and --pprof) and starts the
// Gearman and HTTP front ends on b.
func startFrontEnds(ctx context.Context, cfg serveConfig, setup *serveSetup, b *broker.Broker, level slog.Level, log *slog.Logger) (*frontEnds, error) {
	sec := setup.sec
	fe := &frontEnds{serveErr: make(chan error, 1), shutdown: make(chan bool, 1), stopPprof: func() {}, setup: setup}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return nil, fmt.Errorf("cannot listen on %s: %w", cfg.listen, err)
	}
	fe.addr = ln.Addr().String()
	if sec.tls != nil {
		ln = tls.NewListener(ln, sec.tls)
		log.Info("serve: TLS on the Gearman port", slog.String("certificate", certSubject(sec.cert)),
			slog.Bool("mutual", sec.tls.ClientCAs != nil))
	}
	if cfg.pprof != "" {
		pln, err := net.Listen("tcp", cfg.pprof)
		if err != nil {
			ln.Close()
			return nil, fmt.Errorf("cannot listen on %s for --pprof: %w", cfg.pprof, err)
		}
		fe.stopPprof = startPprof(pln, log)
	}
	gcfg := gearmanapi.Config{
		Broker:                   b,
		MaxPacket:                cfg.maxPacket,
		MaxOutput:                cfg.sec.maxOutput,
		MaxConnections:           setup.maxConns,
		MaxConnectionsPerAddress: cfg.sec.maxPerAddress,
		MaxPacketUnauthenticated: cfg.sec.maxPacketUnauth,
		HandshakeTimeout:         cfg.sec.handshakeTimeout,
		ReadTimeout:              orDisabled(cfg.sec.readTimeout),
		WriteTimeout:             orDisabled(cfg.sec.writeTimeout),
		Version:                  version,
		Verbose:                  strings.ToUpper(level.String()),
		Logger:                   log,
		ShutdownFunc: func(graceful bool) {
			select {
			case fe.shutdown <- graceful:
			default:
			}
		},
	}
	if sec.policy != nil {
		gcfg.Authorizer = sec.policy
		log.Info("serve: authorization rules in force", slog.Int("rules", sec.policy.Len()))
	}
	fe.srv = gearmanapi.New(gcfg)
	go func() { fe.serveErr <- fe.srv.Serve(ctx, ln) }()
	// A PostgreSQL URL without its password; --sync only where it applies.
	storeURL := cfg.store.url
	if !strings.HasPrefix(storeURL, "pebble:") && !strings.HasPrefix(storeURL, "memory") {
		storeURL = redactURL(storeURL)
	}
	attrs := []any{slog.String("addr", ln.Addr().String()), slog.String("store", storeURL)}
	if strings.HasPrefix(cfg.store.url, "pebble:") {
		attrs = append(attrs, slog.String("sync", cfg.store.sync))
	}
	log.Info("serve: listening", append(attrs, slog.Int("jobs", b.JobCount()), slog.Duration("startup", time.Since(setup.startedAt)))...)
	if inMemory, onDisk := b.TieringStats(); onDisk > 0 {
		log.Info("serve: payloads beyond --memory-budget stay on disk", slog.Int64("budget", setup.budget),
			slog.Int64("payload_bytes_in_memory", inMemory), slog.Int("jobs_with_payload_on_disk", onDisk))
	}
	if setup.http != nil && sec.policy != nil {
		// The rules decide for HTTP clients with a verified certificate
		// too, when no token is configured.
		setup.http.cfg.Rules = sec.policy
	}
	fe.http, err = startHTTP(ctx, setup.http, b, func() map[string]int { return map[string]int{"gearman": fe.srv.Connections()} }, log)
	if err != nil {
		fe.srv.Close()
		fe.stopPprof()
		return nil, err
	}
	return fe, nil
}

// runUntilStopped waits until ctx ends, a signal or the admin "shutdown"
// command stops the server, or the Gearman front end fails; then it stops
// the front ends and the broker in order.
func (fe *frontEnds) runUntilStopped(ctx context.Context, cfg serveConfig, b *broker.Broker, log *slog.Logger) error {
	srv := fe.srv
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	defer signal.Stop(usr1)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer func() { signal.Stop(hup); close(hup) }()
	go func() {
		for range hup {
			reload(log, fe.setup.sec.cert, fe.setup.http)
		}
	}()
	sdNotify(log, "READY=1", "STATUS=serving "+fe.addr)

	graceful := false
	select {
	case <-ctx.Done():
		log.Info("serve: stopping")
	case <-usr1:
		graceful = true
	case g := <-fe.shutdown:
		graceful = g
	case err := <-fe.serveErr:
		if !errors.Is(err, gearmanapi.ErrServerClosed) {
			srv.Close()
			return fmt.Errorf("serving %s: %w", cfg.listen, err)
		}
	}
	sdNotify(log, "STOPPING=1")
	if graceful {
		// Stop accepting and handing out jobs; let running ones finish.
		log.Info("serve: graceful stop: waiting for running jobs", slog.Duration("timeout", cfg.shutdownTimeout))
		// The HTTP API keeps serving meanwhile, so that HTTP workers can
		// report the jobs they hold; it hands out no new ones. The broker
		// stops handing out jobs before the listeners close, so that a
		// client that sees the port closed sees no job handed out after.
		idle := b.Drain()
		srv.CloseListeners()
		select {
		case <-idle:
		case <-time.After(cfg.shutdownTimeout):
			log.Warn("serve: graceful stop timed out; running jobs will run again after restart")
			b.Stopping("shutdown deadline")
		case <-ctx.Done():
			b.Stopping("server stopping")
		}
	}
	// Order: stop both front ends (HTTP first: its streams and long polls
	// end, jobs held by HTTP workers go back), closing connections so no new
	// work arrives; then stop the broker (flushes the committer); then close
	// the store (deferred).
	if !graceful {
		b.Stopping("server stopping")
	}
	fe.http.stop(5*time.Second, log)
	srv.Close()
	b.Stop()
	log.Info("serve: stopped")
	return nil
}

// orDisabled maps a flag's 0 ("disabled") to a negative duration, which
// gearmanapi reads as disabled (its zero means "default").
func orDisabled(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// noLimit turns a flag's 0, no limit, into the broker's negative one (its
// 0 is the default): --max-functions, --max-worker-functions,
// --max-open-batches, --max-record-bytes.
func noLimit[N int | int64](n N) N {
	if n == 0 {
		return -1
	}
	return n
}
