package broker

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Policy is the lifecycle policy of one function. The zero value keeps
// gearmand's behaviour: WORK_FAIL and WORK_EXCEPTION are final, a job is
// taken back from a vanished worker as often as Config.JobRetries allows
// (one held past its worker's CAN_DO_TIMEOUT fails, as the protocol says), no limits, strict priorities, no retained
// results. Background jobs that fail for good are kept as dead letters
// (MaxDeadLetters), which no Gearman client can observe.
//
// Every field has a key used by the config file, the "policy" admin
// command and Policy.Set; the key is given in brackets.
type Policy struct {
	// MaxAttempts [max_attempts] is how often a background job runs at
	// most: 0 keeps gearmand's rules (no retries of WORK_FAIL), N ≥ 1 runs
	// it up to N times, counting every failure (WORK_FAIL, WORK_EXCEPTION,
	// worker vanished, timeout), -1 retries without limit. A foreground
	// job is never retried after WORK_FAIL or WORK_EXCEPTION (its client
	// decides); with N ≥ 1 it fails once taken back N times.
	MaxAttempts int
	// Backoff is the wait before a retry.
	Backoff Backoff
	// Timeout [timeout] fails the run of a job whose worker holds it longer
	// (in addition to CAN_DO_TIMEOUT; the shorter wins): the job runs again
	// if MaxAttempts allows, else it fails. 0 means none.
	Timeout time.Duration
	// Ordering [ordering] derives a job's ordering key from its unique id:
	// OrderingOff ("off", the zero value) or OrderingUniquePrefix
	// ("unique-prefix": the unique up to the last OrderingSeparator; a
	// unique without one has no key). Jobs of the function sharing a key
	// run one at a time, in the order they became runnable.
	Ordering Ordering
	// OrderingSeparator [ordering_separator] ends the ordering key inside a
	// unique id. "" means ":".
	OrderingSeparator string
	// Concurrency [concurrency] is the most jobs of the function running at
	// once across all workers. 0 means no limit.
	Concurrency int
	// Rate [rate] is the most jobs per second handed out, as a token bucket
	// of Burst [burst] tokens. Rate 0 means no limit; Burst 0 means
	// max(1, ceil(Rate)).
	Rate  float64
	Burst int
	// MaxQueue [max_queue] limits the function's live jobs per priority
	// (high, normal, low), as gearmand's "maxqueue": 0 means no limit. The
	// key takes one number for all priorities or three separated by commas.
	MaxQueue [numPriorities]int
	// Overflow [overflow] says what a submit to a full queue does:
	// OverflowReject ("reject", the zero value: ERROR "Job queue is full")
	// or OverflowDropOldest ("drop-oldest": the oldest queued job of the
	// same or a lower priority is dropped, lowest first; its foreground
	// clients get WORK_FAIL; with none to drop the submit is rejected).
	Overflow Overflow
	// ResultRetention [result_retention] keeps the WORK_COMPLETE data of a
	// background job this long: it can be read back by handle or unique,
	// and a submit with the same unique within that time answers with the
	// finished job instead of running it again. 0 means not kept.
	ResultRetention time.Duration
	// AgeAfter [age_after] raises a queued job one priority level for each
	// AgeAfter it has waited (a low job waiting 2×AgeAfter competes as
	// high). 0 means strict priorities.
	AgeAfter time.Duration
	// MaxDeadLetters [max_dead_letters] is how many dead letters the
	// function keeps; beyond it the oldest are purged. 0 means 10000, -1
	// keeps none (failed jobs are dropped as gearmand does).
	MaxDeadLetters int
	// History [history] is how long the records of the function's jobs
	// that ended are kept (GET /v1/jobs/{handle}, "show job"). The zero
	// value means DefaultHistory (24h); the key's "0" (stored as -1)
	// keeps none.
	History time.Duration
	// HistoryMax [history_max] is how many records of ended jobs the
	// function keeps at most, the oldest going first. The zero value
	// means DefaultHistoryMax (10000); the key's "0" (stored as -1) keeps
	// none.
	HistoryMax int
}

// Backoff is an exponential backoff with jitter: the wait before retry n
// (n = 1 after the first failure) is min(Max, Initial × Multiplier^(n-1)),
// of which a random fraction up to Jitter is taken off.
type Backoff struct {
	// Initial [backoff] is the first wait. 0 means 1s.
	Initial time.Duration
	// Max [backoff_max] caps the wait. 0 means 10m.
	Max time.Duration
	// Multiplier [backoff_multiplier] grows the wait. 0 means 2.
	Multiplier float64
	// Jitter [backoff_jitter] is the largest fraction (0 to 1) of a wait
	// taken off at random. 0 means 0.2; negative means no jitter.
	Jitter float64
}

// Ordering is how a function derives ordering keys from unique ids.
type Ordering string

// Ordering rules.
const (
	OrderingOff          Ordering = ""
	OrderingUniquePrefix Ordering = "unique-prefix"
)

// Overflow is what a submit to a full queue does.
type Overflow string

// Overflow policies.
const (
	OverflowReject     Overflow = ""
	OverflowDropOldest Overflow = "drop-oldest"
)

// DefaultMaxDeadLetters is the number of dead letters a function keeps
// when its policy says 0.
const DefaultMaxDeadLetters = 10000

// IsZero reports whether p is the zero (gearmand) policy.
func (p Policy) IsZero() bool { return p == Policy{} }

// needsLife reports whether p changes how the function's jobs run, which
// takes lifecycle state (fnLife, jobLife): every key but max_queue (the
// function's own field) and the history keys (historyLimits reads them as
// jobs end).
func (p Policy) needsLife() bool {
	p.MaxQueue = [numPriorities]int{}
	p.History, p.HistoryMax = 0, 0
	return !p.IsZero()
}

// limited reports whether p restricts which jobs Grab may hand out or
// changes the order in which it does.
func (p Policy) limited() bool {
	return p.Concurrency > 0 || p.Rate > 0 || p.AgeAfter > 0
}

// The waits of Backoff when its keys are not given.
const (
	DefaultBackoff    = time.Second
	DefaultBackoffMax = 10 * time.Minute
)

// Validate reports a policy whose keys contradict each other, an error
// wrapping ErrPolicy: a backoff given longer than the backoff_max given
// (which caps every wait, the first one too, so the backoff would never
// be waited). Without a backoff_max the cap is DefaultBackoffMax or the
// backoff, whichever is longer (limit), so a long backoff alone is taken
// as written. Each key on its own was checked by Set; the config file and
// the "policy" admin command both call Validate once all keys are set.
func (p Policy) Validate() error {
	if first, limit := p.Backoff.Initial, p.Backoff.Max; limit > 0 && first > limit {
		return fmt.Errorf("%w: backoff %s is longer than backoff_max %s, which caps every wait: raise backoff_max or lower backoff",
			ErrPolicy, first, limit)
	}
	return nil
}

// limit returns the cap of every wait: backoff_max when given, otherwise
// DefaultBackoffMax, or the backoff when that is longer (a backoff of an
// hour with no backoff_max waits an hour, not the default cap).
func (bo Backoff) limit() time.Duration {
	if bo.Max > 0 {
		return bo.Max
	}
	return max(DefaultBackoffMax, bo.Initial)
}

// delay returns the backoff before retry n (n ≥ 1); r is a random number
// in [0, 1).
func (bo Backoff) delay(n uint32, r float64) time.Duration {
	initial := float64(bo.Initial)
	if initial <= 0 {
		initial = float64(DefaultBackoff)
	}
	limit := float64(bo.limit())
	mult := bo.Multiplier
	if mult <= 0 {
		mult = 2
	}
	d := initial * math.Pow(mult, float64(max(n, 1)-1))
	if math.IsInf(d, 0) || math.IsNaN(d) || d > limit {
		d = limit
	}
	jitter := bo.Jitter
	if jitter == 0 {
		jitter = 0.2
	}
	if jitter > 0 {
		d -= d * min(jitter, 1) * r
	}
	if d >= math.MaxInt64 {
		// float64(math.MaxInt64) is 2^63, which time.Duration cannot hold.
		return math.MaxInt64
	}
	return time.Duration(d)
}

func (p Policy) separator() string {
	if p.OrderingSeparator == "" {
		return ":"
	}
	return p.OrderingSeparator
}

// orderingKey derives the ordering key of a unique id; "" means none.
func (p Policy) orderingKey(unique []byte) string {
	if p.Ordering != OrderingUniquePrefix || len(unique) == 0 {
		return ""
	}
	i := strings.LastIndex(string(unique), p.separator())
	if i <= 0 {
		return ""
	}
	return string(unique[:i])
}

func (p Policy) burst() float64 {
	if p.Burst > 0 {
		return float64(p.Burst)
	}
	return max(1, math.Ceil(p.Rate))
}

func (p Policy) maxDeadLetters() int {
	if p.MaxDeadLetters == 0 {
		return DefaultMaxDeadLetters
	}
	return max(p.MaxDeadLetters, 0)
}

// PolicyKeys lists the keys accepted by Policy.Set, in the order Format
// writes them.
var PolicyKeys = []string{
	"max_attempts", "backoff", "backoff_max", "backoff_multiplier", "backoff_jitter",
	"timeout", "ordering", "ordering_separator", "concurrency", "rate", "burst",
	"max_queue", "overflow", "result_retention", "age_after", "max_dead_letters",
	"history", "history_max",
}

// Set sets the field named by key from its text form: durations as Go
// durations ("1.5s", "10m"), counts as integers, max_queue as "N" or
// "H,N,L", ordering as "off" or "unique-prefix", overflow as "reject" or
// "drop-oldest". Errors wrap ErrPolicy.
func (p *Policy) Set(key, value string) error {
	bad := func(err error) error {
		return fmt.Errorf("%w: %s=%q: %v", ErrPolicy, key, value, err)
	}
	value = strings.TrimSpace(value)
	var err error
	switch key {
	case "max_attempts":
		p.MaxAttempts, err = strconv.Atoi(value)
		if err == nil && p.MaxAttempts < -1 {
			err = errors.New("must be -1, 0 or positive")
		}
	case "backoff":
		p.Backoff.Initial, err = parseDuration(value)
	case "backoff_max":
		p.Backoff.Max, err = parseDuration(value)
	case "backoff_multiplier":
		p.Backoff.Multiplier, err = strconv.ParseFloat(value, 64)
		if err == nil && (p.Backoff.Multiplier < 0 || math.IsNaN(p.Backoff.Multiplier) || math.IsInf(p.Backoff.Multiplier, 0)) {
			err = errors.New("must be a positive number")
		}
	case "backoff_jitter":
		p.Backoff.Jitter, err = strconv.ParseFloat(value, 64)
		if err == nil && (p.Backoff.Jitter > 1 || math.IsNaN(p.Backoff.Jitter)) {
			err = errors.New("must be at most 1")
		}
	case "timeout":
		p.Timeout, err = parseDuration(value)
	case "ordering":
		p.Ordering, err = parseChoice(value, "off", OrderingUniquePrefix)
	case "ordering_separator":
		p.OrderingSeparator = value
	case "concurrency":
		p.Concurrency, err = nonNegative(value)
	case "rate":
		p.Rate, err = strconv.ParseFloat(value, 64)
		if err == nil && (p.Rate < 0 || math.IsNaN(p.Rate) || math.IsInf(p.Rate, 0)) {
			err = errors.New("must be a non-negative number")
		}
	case "burst":
		p.Burst, err = nonNegative(value)
	case "max_queue":
		parts := strings.Split(value, ",")
		if len(parts) != 1 && len(parts) != numPriorities {
			err = errors.New("use N or HIGH,NORMAL,LOW")
			break
		}
		var q [numPriorities]int
		for i := range q {
			if q[i], err = nonNegative(parts[min(i, len(parts)-1)]); err != nil {
				break
			}
		}
		p.MaxQueue = q
	case "overflow":
		p.Overflow, err = parseChoice(value, "reject", OverflowDropOldest)
	case "result_retention":
		p.ResultRetention, err = parseDuration(value)
	case "age_after":
		p.AgeAfter, err = parseDuration(value)
	case "max_dead_letters":
		p.MaxDeadLetters, err = strconv.Atoi(value)
		if err == nil && p.MaxDeadLetters < -1 {
			err = errors.New("must be -1, 0 or positive")
		}
	case "history":
		var d time.Duration
		if d, err = parseDuration(value); err == nil {
			p.History = historyField(d, DefaultHistory)
		}
	case "history_max":
		var n int
		if n, err = nonNegative(value); err == nil {
			p.HistoryMax = historyField(n, DefaultHistoryMax)
		}
	default:
		return fmt.Errorf("%w: unknown key %q (known: %s)", ErrPolicy, key, strings.Join(PolicyKeys, ", "))
	}
	if err != nil {
		return bad(err)
	}
	return nil
}

// Get returns the text form of the field named by key, as Set accepts it,
// and false for an unknown key.
func (p Policy) Get(key string) (string, bool) {
	d := func(v time.Duration) string { return v.String() }
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	switch key {
	case "max_attempts":
		return strconv.Itoa(p.MaxAttempts), true
	case "backoff":
		return d(p.Backoff.Initial), true
	case "backoff_max":
		return d(p.Backoff.Max), true
	case "backoff_multiplier":
		return f(p.Backoff.Multiplier), true
	case "backoff_jitter":
		return f(p.Backoff.Jitter), true
	case "timeout":
		return d(p.Timeout), true
	case "ordering":
		return choiceName(p.Ordering, "off"), true
	case "ordering_separator":
		return p.separator(), true
	case "concurrency":
		return strconv.Itoa(p.Concurrency), true
	case "rate":
		return f(p.Rate), true
	case "burst":
		return strconv.Itoa(p.Burst), true
	case "max_queue":
		q := p.MaxQueue
		if q[0] == q[1] && q[1] == q[2] {
			return strconv.Itoa(q[0]), true
		}
		return fmt.Sprintf("%d,%d,%d", q[0], q[1], q[2]), true
	case "overflow":
		return choiceName(p.Overflow, "reject"), true
	case "result_retention":
		return d(p.ResultRetention), true
	case "age_after":
		return d(p.AgeAfter), true
	case "max_dead_letters":
		return strconv.Itoa(p.MaxDeadLetters), true
	case "history":
		age, _ := p.historyLimits()
		if age == 0 {
			return "0", true
		}
		return d(age), true
	case "history_max":
		_, n := p.historyLimits()
		return strconv.Itoa(n), true
	}
	return "", false
}

// Format writes every field as "key=value" separated by spaces, in the
// order of PolicyKeys. Set accepts each pair back.
func (p Policy) Format() string {
	var sb strings.Builder
	for i, k := range PolicyKeys {
		if i > 0 {
			sb.WriteByte(' ')
		}
		v, _ := p.Get(k)
		sb.WriteString(k + "=" + v)
	}
	return sb.String()
}

func parseDuration(s string) (time.Duration, error) {
	if s == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err == nil && d < 0 {
		err = errors.New("must not be negative")
	}
	return d, err
}

// parseChoice reads a two-way choice (ordering, overflow): zeroName or ""
// for the zero value, the default, or the name of the other choice.
func parseChoice[T ~string](value, zeroName string, other T) (T, error) {
	switch value {
	case zeroName, "":
		return "", nil
	case string(other):
		return other, nil
	}
	return "", fmt.Errorf("use %q or %q", zeroName, other)
}

// choiceName is the text form of a choice that parseChoice reads.
func choiceName[T ~string](v T, zeroName string) string {
	if v == "" {
		return zeroName
	}
	return string(v)
}

// historyField is the field value (Policy.History, HistoryMax) of a
// history limit as written: 0, keep nothing, is -1, and the default is the
// zero value, so that a policy that only restates it stays the zero
// (gearmand) policy.
func historyField[T int | time.Duration](v, def T) T {
	switch v {
	case 0:
		return -1
	case def:
		return 0
	}
	return v
}

func nonNegative(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err == nil && n < 0 {
		err = errors.New("must not be negative")
	}
	return n, err
}
