package httpapi

import (
	"context"
	"net/http"
	"runtime"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/gearwork/gearwork/internal/broker"
)

// metrics is the server's Prometheus registry: broker counters read at
// scrape time (no cost on the job path) plus HTTP request counts.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	handler  http.Handler
}

func newMetrics(s *Server) *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "gearwork_http_requests_total",
		Help: "HTTP API requests by route and status code, since the server started.",
	}, []string{"route", "code"})
	m.reg.MustRegister(m.requests,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		&brokerCollector{s: s})
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
	return m
}

func (m *metrics) request(route string, code int) {
	if code == 0 {
		code = http.StatusOK
	}
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
}

// handleMetrics serves GET /metrics in the Prometheus text format.
func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) error {
	s.metrics.handler.ServeHTTP(w, r)
	return nil
}

var (
	fnLabel       = []string{"function"}
	descSubmitted = prometheus.NewDesc("gearwork_jobs_submitted_total", "Jobs created, by function, since the server started.", fnLabel, nil)
	descCompleted = prometheus.NewDesc("gearwork_jobs_completed_total", "Jobs a worker completed (WORK_COMPLETE), since the server started.", fnLabel, nil)
	descFailed    = prometheus.NewDesc("gearwork_jobs_failed_total",
		"Runs that ended without a result, by kind: fail (WORK_FAIL), exception (WORK_EXCEPTION), timeout (past its timeout, or an HTTP worker's lease ran out) or vanished (its worker disconnected), since the server started.", []string{"function", "kind"}, nil)
	descRetried = prometheus.NewDesc("gearwork_jobs_retried_total",
		"Jobs to run again: taken back from a worker that vanished or whose lease ran out, or failed or timed out with attempts left (every retry, whoever watches the job), since the server started.", fnLabel, nil)
	descDropped = prometheus.NewDesc("gearwork_jobs_dropped_total",
		"Jobs that left without a worker's result: cancelled, abandoned, or dropped with their function, since the server started.", fnLabel, nil)
	descDead         = prometheus.NewDesc("gearwork_jobs_dead_total", "Jobs that ran out of attempts (background: dead letters; foreground: failed for their clients), since the server started.", fnLabel, nil)
	descDeadLetters  = prometheus.NewDesc("gearwork_dead_letters", "Dead letters kept now.", fnLabel, nil)
	descPaused       = prometheus.NewDesc("gearwork_function_paused", "1 while the function is paused.", fnLabel, nil)
	descQueued       = prometheus.NewDesc("gearwork_queue_depth", "Runnable jobs waiting, by function and priority.", []string{"function", "priority"}, nil)
	descTotal        = prometheus.NewDesc("gearwork_jobs", "Live jobs in every state (pending, scheduled, queued, running, retry-wait, blocked, waiting), by function.", fnLabel, nil)
	descRunning      = prometheus.NewDesc("gearwork_jobs_running", "Jobs held by workers, by function.", fnLabel, nil)
	descWorkers      = prometheus.NewDesc("gearwork_workers", "Workers registered for the function.", fnLabel, nil)
	descWait         = prometheus.NewDesc("gearwork_job_wait_seconds", "Time from submit (or run-at) to a worker taking the job.", fnLabel, nil)
	descRun          = prometheus.NewDesc("gearwork_job_run_seconds", "Time from a worker taking the job to its result.", fnLabel, nil)
	descSessions     = prometheus.NewDesc("gearwork_sessions", "Open broker sessions (Gearman connections, HTTP watchers and HTTP workers).", nil, nil)
	descConns        = prometheus.NewDesc("gearwork_connections", "Open connections by front end.", []string{"frontend"}, nil)
	descLeases       = prometheus.NewDesc("gearwork_http_worker_leases", "Jobs held by HTTP workers under a lease.", nil, nil)
	descPolls        = prometheus.NewDesc("gearwork_http_worker_polls", "HTTP workers waiting in a long poll.", nil, nil)
	descCommit       = prometheus.NewDesc("gearwork_store_commit_seconds", "Latency of one group-commit batch write to the store.", nil, nil)
	descCommitN      = prometheus.NewDesc("gearwork_store_committed_jobs_total", "Jobs written to the store by the group committer, since the server started.", nil, nil)
	descCanDoRefused = prometheus.NewDesc("gearwork_worker_functions_refused_total",
		"Functions workers could not register (CAN_DO, CAN_DO_TIMEOUT, an HTTP grab) because of --max-worker-functions or --max-functions, since the server started.", nil, nil)
	descByState = prometheus.NewDesc("gearwork_jobs_by_state",
		"Jobs by function and state: live ones (pending, scheduled, queued, running, retry-wait, blocked, waiting) now, and ended ones (complete, failed, exception, cancelled, dead) whose records the history keeps.",
		[]string{"function", "state"}, nil)
	descRecordBytes = prometheus.NewDesc("gearwork_job_records_memory_bytes",
		"Memory the records of ended jobs take in the server (all kept records with --store memory:, those not yet written otherwise), bounded by --max-record-bytes.", nil, nil)
	descRecordsEvicted = prometheus.NewDesc("gearwork_job_records_evicted_total",
		"Records of ended jobs forgotten, the oldest first, to keep their memory within --max-record-bytes, since the server started.", nil, nil)
	descOldest = prometheus.NewDesc("gearwork_oldest_queued_job_age_seconds",
		"How long the job that has waited longest in the function's queue has been runnable; 0 when none is queued.", fnLabel, nil)
	descSchedLast = prometheus.NewDesc("gearwork_schedule_last_tick_timestamp_seconds",
		"Unix time of the last tick a cron schedule submitted a job for (absent before its first).", []string{"schedule", "function"}, nil)
	descSchedNext = prometheus.NewDesc("gearwork_schedule_next_tick_timestamp_seconds",
		"Unix time of a cron schedule's next tick.", []string{"schedule", "function"}, nil)
	descOmitted = prometheus.NewDesc("gearwork_metrics_functions_omitted",
		"Functions whose per-function series this scrape left out to stay within --metrics-max-functions.", nil, nil)
	descBuild = prometheus.NewDesc("gearwork_build_info", "Always 1; the labels say which build runs.",
		[]string{"version", "commit", "goversion"}, nil)
)

// brokerCollector reads the broker's counters at scrape time.
type brokerCollector struct{ s *Server }

func (c *brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSubmitted, descCompleted, descFailed, descRetried, descDropped, descDead,
		descDeadLetters, descPaused, descQueued,
		descTotal, descRunning, descWorkers, descWait, descRun, descSessions, descConns, descLeases, descPolls,
		descCommit, descCommitN, descCanDoRefused, descByState, descRecordBytes, descRecordsEvicted, descOldest, descSchedLast, descSchedNext, descOmitted, descBuild} {
		ch <- d
	}
}

// DefaultMetricsMaxFunctions is Config.MetricsMaxFunctions's default.
const DefaultMetricsMaxFunctions = 1000

func constHistogram(desc *prometheus.Desc, h broker.Histogram, labels ...string) prometheus.Metric {
	buckets := make(map[float64]uint64, len(broker.HistogramBounds))
	var cum uint64
	for i, le := range broker.HistogramBounds {
		cum += h.Counts[i]
		buckets[le] = cum
	}
	return prometheus.MustNewConstHistogram(desc, h.Count, h.Sum, buckets, labels...)
}

// metricsStoreTimeout bounds how long a scrape waits for the shared
// store's counts (Prometheus's Collect carries no context).
const metricsStoreTimeout = 5 * time.Second

func (c *brokerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), metricsStoreTimeout)
	defer cancel()
	st := c.s.b.Stats(ctx)
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counts := c.s.b.CountJobs(ctx)
	// A function whose name is not UTF-8 (a Gearman function name may hold
	// any bytes) has no series of its own: a label value is UTF-8, and
	// escaping the name could give two functions one label.
	keep, omitted := selectFunctions(st.Functions, counts, c.s.cfg.MetricsMaxFunctions, utf8.ValidString)
	gauge(descOmitted, omitted)
	for _, f := range st.Functions {
		if !keep[f.Name] {
			continue
		}
		counter(descSubmitted, f.Submitted, f.Name)
		counter(descCompleted, f.Completed, f.Name)
		counter(descFailed, f.Failed, f.Name, "fail")
		counter(descFailed, f.Exceptions, f.Name, "exception")
		counter(descFailed, f.TimedOut, f.Name, "timeout")
		counter(descFailed, f.Vanished, f.Name, "vanished")
		counter(descRetried, f.Retried, f.Name)
		counter(descDropped, f.Dropped, f.Name)
		counter(descDead, f.Dead, f.Name)
		gauge(descDeadLetters, f.DeadLetters, f.Name)
		paused := 0
		if f.Paused {
			paused = 1
		}
		gauge(descPaused, paused, f.Name)
		for _, p := range []broker.Priority{broker.High, broker.Normal, broker.Low} {
			gauge(descQueued, f.Queued[p], f.Name, p.String())
		}
		gauge(descTotal, f.Total, f.Name)
		gauge(descRunning, f.Running, f.Name)
		gauge(descWorkers, f.Workers, f.Name)
		// A function's histograms appear with their first observation
		// (a histogram without any may be absent), not 21 series each for
		// every function that never ran a job.
		if f.Wait.Count > 0 {
			ch <- constHistogram(descWait, f.Wait, f.Name)
		}
		if f.Run.Count > 0 {
			ch <- constHistogram(descRun, f.Run, f.Name)
		}
	}
	gauge(descSessions, st.Sessions)
	held, polls := c.s.leases.count()
	gauge(descLeases, held)
	gauge(descPolls, polls)
	gauge(descConns, int(c.s.conns.Load()), "http")
	if c.s.cfg.ConnectionsFunc != nil {
		for name, n := range c.s.cfg.ConnectionsFunc() {
			gauge(descConns, n, name)
		}
	}
	ch <- constHistogram(descCommit, st.Commit)
	counter(descCommitN, st.CommitJobs)
	ch <- prometheus.MustNewConstMetric(descRecordBytes, prometheus.GaugeValue, float64(st.RecordBytes))
	counter(descRecordsEvicted, st.RecordsEvicted)
	counter(descCanDoRefused, st.CanDoRefused)
	now := time.Now()
	for _, jc := range counts {
		if !keep[jc.Function] {
			continue
		}
		for state, n := range jc.Live {
			gauge(descByState, n, jc.Function, state)
		}
		for state, n := range jc.Ended {
			gauge(descByState, n, jc.Function, state)
		}
		age := 0.0
		if !jc.OldestQueued.IsZero() {
			age = max(now.Sub(jc.OldestQueued).Seconds(), 0)
		}
		ch <- prometheus.MustNewConstMetric(descOldest, prometheus.GaugeValue, age, jc.Function)
	}
	for _, sc := range c.s.b.Schedules() {
		if !utf8.ValidString(sc.Name) || !utf8.ValidString(sc.Function) {
			continue // a label value is UTF-8 (as for functions)
		}
		if !sc.Last.IsZero() {
			ch <- prometheus.MustNewConstMetric(descSchedLast, prometheus.GaugeValue, float64(sc.Last.Unix()), sc.Name, sc.Function)
		}
		if !sc.Next.IsZero() {
			ch <- prometheus.MustNewConstMetric(descSchedNext, prometheus.GaugeValue, float64(sc.Next.Unix()), sc.Name, sc.Function)
		}
	}
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1,
		cmpOr(c.s.cfg.Version, "unknown"), cmpOr(c.s.cfg.Commit, "unknown"), runtime.Version())
}
