package bench

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Result is what one scenario measured.
type Result struct {
	// Scenario is the scenario's name and Server the address it ran against.
	Scenario string
	Server   string
	// Jobs is how many jobs (requests for echo, connections for idle) were
	// measured.
	Jobs int
	// Payload is each job's payload size in bytes.
	Payload int
	// Connections and Inflight describe the clients (Inflight is per
	// connection); Workers and Grabs the workers (Grabs is GRAB_JOBs in
	// flight per worker). Zero means the scenario has none.
	Connections, Inflight int
	Workers, Grabs        int
	// Backlog is how many jobs were queued before measuring began.
	Backlog int
	// Elapsed is the measured time and Rate is Jobs per second of it.
	Elapsed time.Duration
	Rate    float64
	// Paced is the rate steady's submitters were paced to (Config.Rate);
	// 0 when they were not.
	Paced float64
	// LatencyOf says what P50 and P99 measure, such as "submit→start";
	// empty when the scenario measures no latency.
	LatencyOf string
	P50, P99  time.Duration
	// RSS is the server's resident memory in bytes when measuring ended,
	// CPU the server's CPU time while measuring and CPUPerJob CPU/Jobs.
	// All zero when the server's pid was not given.
	RSS       int64
	CPU       time.Duration
	CPUPerJob time.Duration
	// RSSBefore is the server's RSS before memory or idle began, and
	// RSSPerJob the growth per queued job (memory) or per open connection
	// (idle), in bytes. Zero for other scenarios.
	RSSBefore int64
	RSSPerJob float64
	// IdleSettle is how long idle's connections had idled when RSS was
	// read (RSS then is that reading, not the one at the end of Elapsed).
	IdleSettle time.Duration
	// RSSFile is the file-backed part of RSS at the same reading (the
	// server's executable and libraries, which do not grow with
	// connections); idle only.
	RSSFile int64
}

// finish derives Rate and CPUPerJob.
func (r *Result) finish() {
	if r.Elapsed > 0 {
		r.Rate = float64(r.Jobs) / r.Elapsed.Seconds()
	}
	if r.Jobs > 0 {
		r.CPUPerJob = r.CPU / time.Duration(r.Jobs)
	}
}

// field is one key=value pair of a result line.
type field struct {
	key   string
	value any // int, int64, float64 (printed with prec) or string
	prec  int
	// show is false for fields the scenario did not measure.
	show bool
}

// fields lists a result's fields in their fixed order. Measured-only
// fields (latency, server statistics) are present only when measured.
func (r Result) fields() []field {
	us := func(d time.Duration) float64 { return float64(d) / 1e3 }
	hasLat := r.LatencyOf != ""
	hasProc := r.RSS != 0
	hasMem := r.RSSBefore != 0
	return []field{
		{"scenario", r.Scenario, 0, true},
		{"server", r.Server, 0, true},
		{"jobs", r.Jobs, 0, true},
		{"payload", r.Payload, 0, true},
		{"connections", r.Connections, 0, true},
		{"inflight", r.Inflight, 0, true},
		{"workers", r.Workers, 0, true},
		{"grabs", r.Grabs, 0, true},
		{"backlog", r.Backlog, 0, true},
		{"seconds", r.Elapsed.Seconds(), 6, true},
		{"rate", r.Rate, 1, true},
		{"paced", r.Paced, 1, r.Paced > 0},
		{"p50_us", us(r.P50), 1, hasLat},
		{"p99_us", us(r.P99), 1, hasLat},
		{"rss_bytes", r.RSS, 0, hasProc},
		{"cpu_ns_per_job", float64(r.CPUPerJob), 0, hasProc},
		{"rss_before_bytes", r.RSSBefore, 0, hasMem},
		{"rss_bytes_per_job", r.RSSPerJob, 1, hasMem},
		{"settle_seconds", r.IdleSettle.Seconds(), 1, r.IdleSettle > 0},
		{"rss_file_bytes", r.RSSFile, 0, r.RSSFile > 0},
	}
}

// Line returns the result as one line of space-separated key=value pairs,
// in a fixed order: scenario server jobs payload connections inflight
// workers grabs backlog seconds rate, then paced when steady was paced
// (Config.Rate), p50_us p99_us when the scenario
// measures latency, rss_bytes cpu_ns_per_job when the server's pid was
// given, rss_before_bytes rss_bytes_per_job for memory and idle, and
// settle_seconds rss_file_bytes for idle. Values
// contain no spaces. There is no trailing newline.
func (r Result) Line() string {
	var b strings.Builder
	for i, f := range r.fields() {
		if !f.show {
			continue
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(f.key)
		b.WriteByte('=')
		b.WriteString(f.text())
	}
	return b.String()
}

func (f field) text() string {
	switch v := f.value.(type) {
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case float64:
		return strconv.FormatFloat(v, 'f', f.prec, 64)
	case string:
		return strings.ReplaceAll(v, " ", "_")
	}
	panic(fmt.Sprintf("bench: field %s has type %T", f.key, f.value))
}

// MarshalJSON encodes the result as one JSON object with the keys and
// units of Line, in the same order.
func (r Result) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	first := true
	for _, f := range r.fields() {
		if !f.show {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = strconv.AppendQuote(b, f.key)
		b = append(b, ':')
		if s, ok := f.value.(string); ok {
			enc, err := json.Marshal(s)
			if err != nil {
				return nil, err
			}
			b = append(b, enc...)
		} else {
			b = append(b, f.text()...)
		}
	}
	return append(b, '}'), nil
}

// Summary returns a readable one-line account of the result.
func (r Result) Summary() string {
	var b strings.Builder
	unit := "jobs"
	switch r.Scenario {
	case "echo":
		unit = "echoes"
	case "idle":
		unit = "connections"
	}
	fmt.Fprintf(&b, "%-7s %d %s in %.2fs: %s %s/s", r.Scenario, r.Jobs, unit, r.Elapsed.Seconds(), thousands(r.Rate), unit)
	var setup []string
	switch {
	case r.Connections > 0 && r.Inflight > 0:
		setup = append(setup, fmt.Sprintf("%d connections × %d in flight", r.Connections, r.Inflight))
	case r.Connections > 0:
		setup = append(setup, fmt.Sprintf("%d connections", r.Connections))
	}
	if r.Workers > 0 {
		setup = append(setup, fmt.Sprintf("%d workers × %d grabs in flight", r.Workers, r.Grabs))
	}
	if r.Backlog > 0 {
		setup = append(setup, fmt.Sprintf("%d jobs queued before", r.Backlog))
	}
	if len(setup) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(setup, ", "))
	}
	if r.LatencyOf != "" {
		fmt.Fprintf(&b, "; %s p50 %s p99 %s", r.LatencyOf, roundDur(r.P50), roundDur(r.P99))
	}
	if r.RSS != 0 {
		fmt.Fprintf(&b, "; server RSS %.1f MiB", float64(r.RSS)/(1<<20))
		if r.RSSFile != 0 {
			fmt.Fprintf(&b, " (%.1f MiB of it file-backed)", float64(r.RSSFile)/(1<<20))
		}
		fmt.Fprintf(&b, ", CPU %s/job", roundDur(r.CPUPerJob))
	}
	if r.RSSBefore != 0 {
		per := "queued job"
		if r.Scenario == "idle" {
			per = "connection"
		}
		fmt.Fprintf(&b, "; %.0f bytes of RSS per %s", r.RSSPerJob, per)
		if r.IdleSettle > 0 {
			fmt.Fprintf(&b, " after %s idle", r.IdleSettle)
		}
	}
	return b.String()
}

// thousands formats a rate with thousands separators and no decimals.
func thousands(f float64) string {
	s := strconv.FormatFloat(f, 'f', 0, 64)
	var b []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			b = append(b, ',')
		}
		b = append(b, s[i])
	}
	return string(b)
}

func roundDur(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	case d >= time.Microsecond:
		return d.Round(100 * time.Nanosecond)
	}
	return d
}
