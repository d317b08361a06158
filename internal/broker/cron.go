package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/gearwork/gearwork/gearman"
)

// Cron is a parsed schedule: five cron fields (minute hour day-of-month
// month day-of-week, with *, lists, ranges, steps and three-letter month
// and day names), a macro (@yearly, @monthly, @weekly, @daily, @hourly) or
// "@every DURATION" (ticks at whole multiples of the duration since the
// Unix epoch, at least one second apart). Create it with ParseCron.
type Cron struct {
	spec  string
	every time.Duration
	// Bit sets of allowed values.
	minute, hour, dom, month, dow uint64
	domStar, dowStar              bool
	loc                           *time.Location
}

// ParseCron parses a schedule in the time zone loc (nil means UTC).
func ParseCron(spec string, loc *time.Location) (Cron, error) {
	if loc == nil {
		loc = time.UTC
	}
	c := Cron{spec: spec, loc: loc}
	s := strings.TrimSpace(spec)
	switch s {
	case "@yearly", "@annually":
		s = "0 0 1 1 *"
	case "@monthly":
		s = "0 0 1 * *"
	case "@weekly":
		s = "0 0 * * 0"
	case "@daily", "@midnight":
		s = "0 0 * * *"
	case "@hourly":
		s = "0 * * * *"
	}
	if rest, ok := strings.CutPrefix(s, "@every "); ok {
		d, err := time.ParseDuration(strings.TrimSpace(rest))
		if err != nil || d < time.Second {
			return Cron{}, fmt.Errorf("cron %q: @every needs a duration of at least 1s", spec)
		}
		c.every = d.Truncate(time.Second)
		return c, nil
	}
	fields := strings.Fields(s)
	if len(fields) != 5 {
		return Cron{}, fmt.Errorf("cron %q: want 5 fields (minute hour day-of-month month day-of-week)", spec)
	}
	var err error
	parse := func(i, lo, hi int, names []string) uint64 {
		if err != nil {
			return 0
		}
		var bits uint64
		bits, err = parseCronField(fields[i], lo, hi, names)
		if err != nil {
			err = fmt.Errorf("cron %q: field %d: %w", spec, i+1, err)
		}
		return bits
	}
	c.minute = parse(0, 0, 59, nil)
	c.hour = parse(1, 0, 23, nil)
	c.dom = parse(2, 1, 31, nil)
	c.month = parse(3, 1, 12, []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"})
	c.dow = parse(4, 0, 7, []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"})
	if err != nil {
		return Cron{}, err
	}
	if c.dow&(1<<7) != 0 {
		c.dow |= 1 // 7 is Sunday too
	}
	c.domStar = fields[2] == "*" || strings.HasPrefix(fields[2], "*/")
	c.dowStar = fields[4] == "*" || strings.HasPrefix(fields[4], "*/")
	return c, nil
}

func parseCronField(f string, lo, hi int, names []string) (uint64, error) {
	var bits uint64
	for _, part := range strings.Split(f, ",") {
		rng, stepText, hasStep := strings.Cut(part, "/")
		step := 1
		if hasStep {
			n, err := strconv.Atoi(stepText)
			if err != nil || n <= 0 {
				return 0, fmt.Errorf("bad step %q", part)
			}
			step = n
		}
		first, last := lo, hi
		if rng != "*" {
			a, b, isRange := strings.Cut(rng, "-")
			var err error
			if first, err = cronValue(a, lo, names); err != nil {
				return 0, err
			}
			last = first
			if isRange {
				if last, err = cronValue(b, lo, names); err != nil {
					return 0, err
				}
			} else if hasStep {
				last = hi
			}
		}
		if first < lo || last > hi || first > last {
			return 0, fmt.Errorf("%q is outside %d-%d", part, lo, hi)
		}
		for v := first; v <= last; v += step {
			bits |= 1 << uint(v)
		}
	}
	if bits == 0 {
		return 0, errors.New("empty field")
	}
	return bits, nil
}

func cronValue(s string, lo int, names []string) (int, error) {
	for i, n := range names {
		if strings.EqualFold(s, n) {
			return i + lo, nil
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		return 0, fmt.Errorf("bad value %q", s)
	}
	return v, nil
}

// String returns the schedule as it was written.
func (c Cron) String() string { return c.spec }

// Next returns the first tick strictly after t, or the zero time if there
// is none within five years.
func (c Cron) Next(t time.Time) time.Time {
	if c.every > 0 {
		d := int64(c.every / time.Second)
		s := t.Unix()
		if s < 0 {
			s = -1
		}
		return time.Unix((s/d+1)*d, 0)
	}
	if c.minute == 0 {
		return time.Time{}
	}
	t = t.In(c.loc).Truncate(time.Minute).Add(time.Minute)
	limit := t.AddDate(5, 0, 0)
	for t.Before(limit) {
		switch {
		case c.month&(1<<uint(t.Month())) == 0:
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, c.loc)
		case !c.dayMatches(t):
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, c.loc)
		case c.hour&(1<<uint(t.Hour())) == 0:
			t = t.Truncate(time.Hour).Add(time.Hour)
		case c.minute&(1<<uint(t.Minute())) == 0:
			t = t.Add(time.Minute)
		default:
			return t
		}
	}
	return time.Time{}
}

func (c Cron) dayMatches(t time.Time) bool {
	dom := c.dom&(1<<uint(t.Day())) != 0
	dow := c.dow&(1<<uint(t.Weekday())) != 0
	if c.domStar || c.dowStar {
		return dom && dow
	}
	return dom || dow
}

// Missed says what a schedule does with ticks that passed while the server
// was down.
type Missed string

// Missed policies.
const (
	// MissedAll (the zero value) submits one job for every missed tick,
	// at most MaxCatchUp of them.
	MissedAll Missed = ""
	// MissedOne submits one job for all missed ticks (the latest).
	MissedOne Missed = "one"
	// MissedSkip submits nothing for missed ticks.
	MissedSkip Missed = "skip"
)

// MaxCatchUp is the most jobs a schedule submits at once for missed ticks.
const MaxCatchUp = 1000

// Schedule submits a background job at every tick of Cron.
type Schedule struct {
	// Name identifies the schedule; its last tick is stored under it. It
	// is at most MaxScheduleName bytes.
	Name     string
	Function string
	Cron     Cron
	Payload  []byte
	Priority Priority
	// Missed is what to do with ticks missed while the server was down.
	Missed Missed
}

// schedule is a Schedule at run time. Guarded by Broker.mu.
type schedule struct {
	cfg Schedule
	// last is the last tick handled (Unix seconds); 0 if none yet.
	last  int64
	next  time.Time
	timer lifeTimer
}

// MaxScheduleName is the longest Schedule.Name: a tick's job has the
// unique NAME:TICK (cronUnique), which, as every unique, is at most
// gearman.MaxUniqueSize bytes, and a tick has up to 12 digits (Unix
// seconds up to MaxRunAt, the year 9999). A longer name would have every
// tick's submit refused.
const MaxScheduleName = gearman.MaxUniqueSize - len(":") - len("253402300799")

// cronUnique is the unique id of the job a schedule submits for a tick:
// a tick's job coalesces with itself if submitted twice, and the ordering
// rule unique-prefix makes the schedule's jobs run in order.
func cronUnique(name string, tick int64) string {
	return name + ":" + strconv.FormatInt(tick, 10)
}

// startScheduleLocked catches up on ticks missed since last and arms the
// schedule's timer.
func (b *Broker) startScheduleLocked(s *schedule, last, now int64) {
	s.last = last
	if last == 0 {
		s.last = time.Unix(0, now).Unix()
		b.armScheduleLocked(s)
		return
	}
	b.catchUpLocked(s, now, s.cfg.Missed)
	b.armScheduleLocked(s)
}

// catchUpLocked submits jobs for the ticks after s.last up to now.
func (b *Broker) catchUpLocked(s *schedule, now int64, missed Missed) {
	nowT := time.Unix(0, now)
	var due []int64
	for t := s.cfg.Cron.Next(time.Unix(s.last, 0)); !t.IsZero() && !t.After(nowT); t = s.cfg.Cron.Next(t) {
		due = append(due, t.Unix())
		if missed == MissedAll && len(due) >= MaxCatchUp {
			b.log.Warn("broker: too many missed cron ticks; skipping the rest",
				slog.String("schedule", s.cfg.Name), slog.Int("submitted", len(due)))
			break
		}
		if len(due) > 1 && missed != MissedAll {
			due = due[1:]
		}
	}
	if len(due) == 0 {
		return
	}
	switch missed {
	case MissedSkip:
		s.last = due[len(due)-1]
		b.queueMetaLocked(metaKey(metaCron, s.cfg.Name), strconv.AppendInt(nil, s.last, 10))
		return
	case MissedOne:
		due = due[len(due)-1:]
	}
	for _, tick := range due {
		b.fireLocked(s, tick)
	}
}

func (b *Broker) armScheduleLocked(s *schedule) {
	s.next = s.cfg.Cron.Next(time.Unix(s.last, 0))
	if s.next.IsZero() {
		b.removeLifeTimerLocked(&s.timer)
		return
	}
	b.armLifeTimerLocked(&s.timer, s.next.UnixNano(), func(now int64) {
		// While the server runs every due tick is submitted.
		b.catchUpLocked(s, now, MissedAll)
		b.armScheduleLocked(s)
	})
}

// fireLocked submits the job of one tick. The tick is recorded in the
// store with the job (the job itself carries the tick too), and the job
// runs only once that write is done (SubmitParams.hold): handed out
// before, its worker could end it before any write, and a crash then lost
// the job and the tick together, which the next start submitted again as
// a second job. A tick whose submit was refused is not recorded, so that
// the next start submits it again as a missed tick (unless a later tick
// was recorded by then). The function limit never refuses a
// tick (SubmitParams.own): the schedule is configured.
func (b *Broker) fireLocked(s *schedule, tick int64) {
	s.last = tick
	name := s.cfg.Name
	p := SubmitParams{Function: []byte(s.cfg.Function), Unique: []byte(cronUnique(name, tick)),
		Payload: s.cfg.Payload, Priority: s.cfg.Priority, Background: true, schedule: name, tick: tick, own: true,
		hold: true}
	refused := false
	b.submitLocked(nil, p, func(seq uint64, created bool, err error) {
		if err != nil {
			refused = true
			b.log.Error("broker: cron submit failed; the tick is not recorded", slog.String("schedule", name),
				slog.Int64("tick", tick), slog.String("error", err.Error()))
			return
		}
		b.log.Info("broker: cron tick submitted", slog.String("schedule", name),
			slog.Int64("tick", tick), slog.String("handle", b.Handle(seq)), slog.Bool("created", created))
	})
	if !refused {
		// Recorded with the job, in the same commit round: a job its
		// worker ends before that round is never written, and a tick
		// recorded only once the submit was answered could be lost with
		// it to a crash, and submitted again at the next start.
		b.queueMetaLocked(metaKey(metaCron, name), strconv.AppendInt(nil, tick, 10))
	}
}

// ScheduleInfo describes a cron schedule ("show schedules").
type ScheduleInfo struct {
	Name     string
	Function string
	Spec     string
	// Last is the last tick submitted (zero if none); Next the next one.
	Last, Next time.Time
}

// Schedules lists the cron schedules in configuration order.
func (b *Broker) Schedules() []ScheduleInfo {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]ScheduleInfo, 0, len(b.life.schedules))
	for _, s := range b.life.schedules {
		si := ScheduleInfo{Name: s.cfg.Name, Function: s.cfg.Function, Spec: s.cfg.Cron.String(), Next: s.next}
		if s.last != 0 {
			si.Last = time.Unix(s.last, 0)
		}
		out = append(out, si)
	}
	return out
}
