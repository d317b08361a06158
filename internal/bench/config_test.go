package bench

import (
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	ok := Config{Addr: "127.0.0.1:4730"}
	require.NoError(t, ok.Validate(), "defaults are valid")
	for name, tc := range map[string]struct {
		mod  func(*Config)
		want string
	}{
		"no address":     {func(c *Config) { c.Addr = "" }, "no server address"},
		"negative jobs":  {func(c *Config) { c.Jobs = -1 }, "jobs must be at least 1"},
		"tiny payload":   {func(c *Config) { c.Payload = 7 }, "payload must be 8 to"},
		"huge payload":   {func(c *Config) { c.Payload = maxPayload + 1 }, "payload must be 8 to"},
		"connections":    {func(c *Config) { c.Connections = -2 }, "connections must be at least 1"},
		"inflight":       {func(c *Config) { c.Inflight = -1 }, "in-flight requests must be at least 1"},
		"workers":        {func(c *Config) { c.Workers = -1 }, "workers must be at least 1"},
		"grabs":          {func(c *Config) { c.Grabs = -1 }, "grabs must be at least 1"},
		"backlog":        {func(c *Config) { c.Backlog = -1 }, "backlog must not be negative"},
		"rate":           {func(c *Config) { c.Rate = -5 }, "rate must be 0 (not paced) or from"},
		"tiny rate":      {func(c *Config) { c.Rate = 1e-300 }, "rate must be 0 (not paced) or from"},
		"idle":           {func(c *Config) { c.IdleConns = -1 }, "idle connections must be at least 1"},
		"pid":            {func(c *Config) { c.PID = -1 }, "invalid pid"},
		"timeout":        {func(c *Config) { c.Timeout = -time.Second }, "timeout must be positive"},
		"settle":         {func(c *Config) { c.IdleSettle = -time.Second }, "idle settle time must not be negative"},
		"function NUL":   {func(c *Config) { c.Function = "a\x00b" }, "function prefix"},
		"function large": {func(c *Config) { c.Function = string(make([]byte, 401)) }, "function prefix"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := ok
			tc.mod(&c)
			err := c.Validate()
			require.ErrorContains(t, err, tc.want)
		})
	}
}

func TestParseScenarios(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		list    string
		havePID bool
		want    []string
		err     string
	}{
		{list: "", want: []string{"submit", "drain1", "drain8", "steady", "fg1", "fg64", "echo"}},
		{list: "all", havePID: true, want: []string{"submit", "drain1", "drain8", "steady", "fg1", "fg64", "echo", "memory", "idle"}},
		{list: "echo,submit", want: []string{"echo", "submit"}},
		{list: "drain, fg ,drain8", want: []string{"drain1", "drain8", "fg1", "fg64"}},
		{list: "FG64", want: []string{"fg64"}},
		{list: "memory", havePID: true, want: []string{"memory"}},
		{list: "verify,echo", want: []string{"verify", "echo"}},
		{list: "memory", err: "scenario memory needs the server's pid"},
		{list: "idle,echo", err: "scenario idle needs the server's pid"},
		{list: "submit,,echo", err: "empty scenario name"},
		{list: "sumbit", err: `unknown scenario "sumbit"`},
	} {
		got, err := ParseScenarios(tc.list, tc.havePID)
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err, "list %q", tc.list)
			continue
		}
		require.NoError(t, err, "list %q", tc.list)
		require.Equal(t, tc.want, got, "list %q", tc.list)
	}
	require.Equal(t, []string{"submit", "drain1", "drain8", "steady", "fg1", "fg64", "echo", "memory", "idle", "verify"}, Scenarios())
}

func TestShare(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 7, 500, 200001} {
		for _, k := range []int{1, 3, 4, 64} {
			sum := 0
			for i := range k {
				s := share(n, k, i)
				require.LessOrEqual(t, s-n/k, 1)
				sum += s
			}
			require.Equal(t, n, sum, "share(%d, %d, ·)", n, k)
		}
	}
}
