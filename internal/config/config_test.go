package config

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/internal/broker"
)

func TestLoadExample(t *testing.T) {
	t.Parallel()
	lc, err := Load("testdata/gearwork.yaml")
	require.NoError(t, err)
	require.Equal(t, broker.Policy{MaxDeadLetters: 1000}, lc.DefaultPolicy)
	require.Equal(t, broker.Policy{MaxAttempts: 5, Backoff: broker.Backoff{Initial: 2 * time.Second, Max: 5 * time.Minute},
		Timeout: 30 * time.Second, Concurrency: 4, MaxQueue: [3]int{100, 1000, 1000},
		Overflow: broker.OverflowDropOldest, MaxDeadLetters: 1000}, lc.Policies["resize"])
	require.Equal(t, broker.Policy{MaxAttempts: -1, Ordering: broker.OrderingUniquePrefix, OrderingSeparator: ":",
		ResultRetention: 24 * time.Hour, MaxDeadLetters: 1000}, lc.Policies["payments"])
	require.Equal(t, broker.Policy{Rate: 10, Burst: 20, AgeAfter: time.Minute, MaxDeadLetters: 1000}, lc.Policies["mail"])
	require.Len(t, lc.Schedules, 2)
	s := lc.Schedules[0]
	require.Equal(t, "nightly-report", s.Name)
	require.Equal(t, "report", s.Function)
	require.Equal(t, "0 3 * * *", s.Cron.String())
	require.Equal(t, []byte(`{"kind":"daily"}`), s.Payload)
	require.Equal(t, broker.Low, s.Priority)
	require.Equal(t, broker.MissedOne, s.Missed)
	require.Equal(t, time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC),
		s.Cron.Next(time.Date(2026, 1, 1, 3, 0, 0, 0, time.UTC)).UTC())
	require.Equal(t, broker.MissedAll, lc.Schedules[1].Missed)
	require.Equal(t, broker.Normal, lc.Schedules[1].Priority)
}

func TestParseEmpty(t *testing.T) {
	t.Parallel()
	lc, err := Parse(nil)
	require.NoError(t, err)
	require.True(t, lc.DefaultPolicy.IsZero())
	require.Empty(t, lc.Policies)
	require.Empty(t, lc.Schedules)
}

// TestParseBackoffMaxAlone: a backoff_max shorter than the default backoff
// (1s), with no backoff given, is a cap on every wait, taken as it was
// before a backoff longer than its cap was refused: the policy asks for
// retries at most 500 ms apart and gets them.
func TestParseBackoffMaxAlone(t *testing.T) {
	t.Parallel()
	lc, err := Parse([]byte("functions:\n  fast:\n    max_attempts: 5\n    backoff_max: 500ms\n"))
	require.NoError(t, err)
	require.Equal(t, 500*time.Millisecond, lc.Policies["fast"].Backoff.Max)
	// Inherited from defaults too.
	_, err = Parse([]byte("defaults:\n  backoff_max: 200ms\nfunctions:\n  fast:\n    max_attempts: 5\n"))
	require.NoError(t, err)
	// A backoff given, by the function or its defaults, still may not
	// exceed the cap.
	_, err = Parse([]byte("defaults:\n  backoff: 2s\nfunctions:\n  fast:\n    backoff_max: 500ms\n"))
	require.ErrorContains(t, err, "backoff 2s is longer than backoff_max 500ms")
}

// A backoff longer than the default cap, with no backoff_max, is taken as
// written (its waits are capped by the backoff itself, not by the default
// 10m): a configuration with "backoff: 1h" alone starts.
func TestParseLongBackoffAlone(t *testing.T) {
	t.Parallel()
	lc, err := Parse([]byte("functions:\n  slow:\n    max_attempts: 3\n    backoff: 1h\n"))
	require.NoError(t, err)
	require.Equal(t, time.Hour, lc.Policies["slow"].Backoff.Initial)
	require.Zero(t, lc.Policies["slow"].Backoff.Max)
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ yaml, want string }{
		{"functions:\n  f:\n    max_attempt: 3\n", `line 3: functions.f: invalid policy: unknown key "max_attempt"`},
		{"functions:\n  f:\n    timeout: soon\n", `line 3: functions.f: invalid policy: timeout="soon"`},
		{"functions:\n  f: 3\n", "line 2: functions.f: want a mapping of policy keys"},
		{"function:\n  f: {}\n", `line 1: unknown key "function"`},
		{"functions:\n  - f\n", "line 2: want a mapping of keys, not a list"},
		{"schedules:\n  - name: a\n    function: f\n    cron: '@hourly'\n    timezon: UTC\n", `line 5: unknown key "timezon"`},
		{"schedules:\n  - name: a\n    function: f\n    cron: '* * *'\n", "schedules[0]: cron"},
		{"schedules:\n  - name: a\n    function: f\n    cron: '@hourly'\n  - name: a\n    function: g\n    cron: '@daily'\n", `duplicate name "a"`},
		{"schedules:\n  - name: a\n    function: f\n    cron: '@hourly'\n    missed: some\n", `missed "some"`},
		{"schedules:\n  - name: a/b\n    function: f\n    cron: '@hourly'\n", "must not contain"},
		// The name is part of each tick's unique, which holds no NUL.
		{"schedules:\n  - name: \"a\\0b\"\n    function: f\n    cron: '@hourly'\n", "must not contain"},
		{"schedules:\n  - name: " + strings.Repeat("n", broker.MaxScheduleName+1) + "\n    function: f\n    cron: '@hourly'\n", "at most 51"},
		{"schedules:\n  - name: a\n    function: f\n    cron: '@hourly'\n    timezone: Mars/Olympus\n", "timezone"},
		// A key given twice is a mistake whichever value was meant.
		{"functions:\n  f:\n    max_attempts: 5\n    max_attempts: 7\n", `line 4: functions.f: key "max_attempts" already given at line 3`},
		{"defaults:\n  backoff: 1s\n  timeout: 5s\n  backoff: 2s\n", `line 4: defaults: key "backoff" already given at line 2`},
		// A backoff longer than its cap (the default 10m here) would not be waited.
		{"functions:\n  f:\n    max_attempts: 3\n    backoff: 1h\n    backoff_max: 10m\n", "line 3: functions.f: invalid policy: backoff 1h0m0s is longer than backoff_max 10m0s"},
		{"defaults:\n  backoff: 1m\n  backoff_max: 30s\n", "line 2: defaults: invalid policy: backoff 1m0s is longer than backoff_max 30s"},
		// Only one document: a second one would be ignored.
		{"functions:\n  a:\n    max_attempts: 2\n---\nfunctions:\n  b:\n    max_attempts: 3\n", "line 4: a second YAML document"},
	} {
		_, err := Parse([]byte(tc.yaml))
		require.Error(t, err, tc.yaml)
		require.Contains(t, err.Error(), tc.want, tc.yaml)
	}
}
