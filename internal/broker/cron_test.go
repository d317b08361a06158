package broker

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"

	"github.com/gearwork/gearwork/internal/store/memory"
)

func TestCronNext(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 1, 5, 10, 7, 30, 0, time.UTC) // a Monday
	for _, tc := range []struct {
		spec string
		want []string
	}{
		{"*/15 * * * *", []string{"2026-01-05T10:15:00Z", "2026-01-05T10:30:00Z", "2026-01-05T10:45:00Z"}},
		{"0 3 * * *", []string{"2026-01-06T03:00:00Z", "2026-01-07T03:00:00Z"}},
		{"30 9 * * mon-fri", []string{"2026-01-06T09:30:00Z", "2026-01-07T09:30:00Z"}},
		{"0 0 1 feb *", []string{"2026-02-01T00:00:00Z", "2027-02-01T00:00:00Z"}},
		{"0 12 13 * 5", []string{"2026-01-09T12:00:00Z", "2026-01-13T12:00:00Z", "2026-01-16T12:00:00Z"}},
		{"0 0 29 2 *", []string{"2028-02-29T00:00:00Z"}},
		{"@hourly", []string{"2026-01-05T11:00:00Z", "2026-01-05T12:00:00Z"}},
		{"@every 90s", []string{"2026-01-05T10:09:00Z", "2026-01-05T10:10:30Z"}},
		{"0 0 * * 7", []string{"2026-01-11T00:00:00Z"}},
	} {
		c, err := ParseCron(tc.spec, nil)
		require.NoError(t, err, tc.spec)
		var got []string
		at := base
		for range tc.want {
			at = c.Next(at)
			got = append(got, at.UTC().Format(time.RFC3339))
		}
		require.Equal(t, tc.want, got, tc.spec)
	}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err == nil {
		c, err := ParseCron("0 3 * * *", berlin)
		require.NoError(t, err)
		require.Equal(t, "2026-01-06T02:00:00Z", c.Next(base).UTC().Format(time.RFC3339))
	}
	for _, bad := range []string{"", "* * * *", "60 * * * *", "* * 0 * *", "*/0 * * * *", "5-1 * * * *", "@every 10ms", "x * * * *"} {
		_, err := ParseCron(bad, nil)
		require.Error(t, err, bad)
	}
}

func everyMinute(t *testing.T, name, fn string, missed Missed) Schedule {
	t.Helper()
	c, err := ParseCron("* * * * *", nil)
	require.NoError(t, err)
	return Schedule{Name: name, Function: fn, Cron: c, Payload: []byte("tick"), Priority: Normal, Missed: missed}
}

// The longest schedule name a configuration takes (MaxScheduleName) makes
// uniques a submit takes, up to the last tick of the year 9999: its ticks
// are submitted.
func TestCronTickOfTheLongestName(t *testing.T) {
	t.Parallel()
	name := strings.Repeat("n", MaxScheduleName)
	require.Len(t, cronUnique(name, MaxRunAt), gearman.MaxUniqueSize)
	tb := setupLC(t, lcOpts{cfg: Config{Schedules: []Schedule{everyMinute(t, name, "fn", MissedAll)}}, can: []string{"fn"}})
	tb.advance(time.Minute)
	require.Equal(t, cronUnique(name, tb.clock.Now().Unix()), tb.grab(t).Unique)
}

// A schedule submits one job per tick.
func TestCronSubmitsPerTick(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{cfg: Config{Schedules: []Schedule{everyMinute(t, "min", "fn", MissedAll)}}, can: []string{"fn"}})
	tb.noJob(t)
	tb.advance(59 * time.Second)
	tb.noJob(t) // 10:00:59
	tb.advance(time.Second)
	a := tb.grab(t) // 10:01:00
	require.Equal(t, "min:"+itoa(tb.clock.Now().Unix()), a.Unique)
	require.Equal(t, []byte("tick"), a.Payload)
	tb.advance(30 * time.Second)
	tb.noJob(t)
	// The clock jumps three ticks: every one is submitted, once.
	tb.advance(150 * time.Second)
	for range 3 {
		tb.grab(t)
	}
	tb.noJob(t)
	tb.b.RunTimers()
	tb.noJob(t)
	si := tb.b.Schedules()
	require.Len(t, si, 1)
	require.Equal(t, time.Date(2026, 1, 5, 10, 4, 0, 0, time.UTC), si[0].Last.UTC())
	require.Equal(t, time.Date(2026, 1, 5, 10, 5, 0, 0, time.UTC), si[0].Next.UTC())
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// A schedule's function is not known until its first tick, and the tick
// is the server's own submit: --max-functions never refuses it, also when
// peers have named as many functions as the server knows.
func TestCronTickIsNotRefusedForTheFunctionLimit(t *testing.T) {
	t.Parallel()
	tb := setupLC(t, lcOpts{cfg: Config{MaxFunctions: 1, Schedules: []Schedule{everyMinute(t, "min", "fn", MissedAll)}},
		store: memory.New()})
	tb.submit(t, lcBG("other", "", "x"))
	_, err := tb.trySubmit(t, lcBG("third", "", "x"))
	require.ErrorIs(t, err, ErrTooManyFunctions, "the server knows its limit of functions")
	tb.advance(time.Minute)
	require.NoError(t, tb.b.Durable(context.Background()))
	require.Contains(t, tb.b.Uniques(), "min:"+itoa(tb.clock.Now().Unix()))
}

// A tick whose submit failed is not recorded as submitted: the next start
// submits it as a missed tick.
func TestCronTickThatFailedIsNotRecorded(t *testing.T) {
	t.Parallel()
	full := Config{Schedules: []Schedule{everyMinute(t, "min", "fn", MissedAll)},
		Policies: policies("fn", Policy{MaxQueue: [numPriorities]int{1, 1, 1}})}
	tb := setupLC(t, lcOpts{cfg: full, store: memory.New()})
	tb.advance(time.Minute) // recorded; its job fills the queue
	require.NoError(t, tb.b.Durable(context.Background()))
	tb.advance(time.Minute) // refused: the queue is full
	tick := "min:" + itoa(tb.clock.Now().Unix())
	require.NoError(t, tb.b.Durable(context.Background()))
	require.NotContains(t, tb.b.Uniques(), tick)
	tb = tb.restart(t, lcOpts{cfg: Config{Schedules: full.Schedules}})
	tb.b.RunTimers()
	require.NoError(t, tb.b.Durable(context.Background()))
	require.Contains(t, tb.b.Uniques(), tick)
}

// A tick's job is handed out only once it is written, with the tick's
// record: handed out before, its worker could end it before any write,
// and a SIGKILL then lost the job and the tick together, which the next
// start submitted again as a second job (TestCrashCronOncePerTick).
func TestCronTickRunsOnceWritten(t *testing.T) {
	t.Parallel()
	st := &countedSaves{Store: memory.New(), entered: make(chan struct{}), release: make(chan struct{})}
	tb := setupLC(t, lcOpts{cfg: Config{Store: st, Schedules: []Schedule{everyMinute(t, "min", "fn", MissedAll)}},
		can: []string{"fn"}})
	var once sync.Once
	let := func() { once.Do(func() { close(st.release) }) }
	t.Cleanup(let)
	tb.advance(time.Minute)
	<-st.entered // the write of the tick's job is held
	tb.noJob(t)
	let()
	require.NoError(t, tb.b.Durable(context.Background()))
	a := tb.grab(t)
	require.Equal(t, "min:"+itoa(tb.clock.Now().Unix()), a.Unique)
}
