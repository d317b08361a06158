package gearman_test

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
)

func TestParseAdmin(t *testing.T) {
	t.Parallel()
	tests := []struct {
		line string
		name string
		args []string
	}{
		{"status", "status", []string{}},
		{"STATUS\r\n", "status", []string{}},
		{"prioritystatus", "prioritystatus", []string{}},
		{"workers\n", "workers", []string{}},
		{"show jobs", "show jobs", []string{}},
		{"Show  Jobs", "show jobs", []string{}},
		{"show unique jobs", "show unique jobs", []string{}},
		{"show\tUNIQUE jobs extra", "show unique jobs", []string{"extra"}},
		{"show maxqueue", "show maxqueue", []string{}},
		{"show maxqueue fn", "show maxqueue", []string{"fn"}},
		{"show unique", "show", []string{"unique"}},
		{"show", "show", []string{}},
		{"cancel job H:host:1", "cancel job", []string{"H:host:1"}},
		{"cancel H:host:1", "cancel", []string{"H:host:1"}},
		{"create function Resize", "create function", []string{"Resize"}},
		{"drop function Resize", "drop function", []string{"Resize"}},
		{"maxqueue fn", "maxqueue", []string{"fn"}},
		{"maxqueue fn 10", "maxqueue", []string{"fn", "10"}},
		{"maxqueue fn 1 2 3", "maxqueue", []string{"fn", "1", "2", "3"}},
		{"getpid", "getpid", []string{}},
		{"version", "version", []string{}},
		{"verbose", "verbose", []string{}},
		{"shutdown", "shutdown", []string{}},
		{"shutdown graceful", "shutdown", []string{"graceful"}},
		{"  status  ", "status", []string{}},
		{"status\x00", "status", []string{}},
		{"bogus words here", "bogus", []string{"words", "here"}},
	}
	for _, tc := range tests {
		got, err := gearman.ParseAdmin([]byte(tc.line))
		require.NoError(t, err, "%q", tc.line)
		require.Equal(t, gearman.AdminCommand{Name: tc.name, Args: tc.args}, got, "%q", tc.line)
	}
	for _, blank := range []string{"", "\r\n", " \t ", "\x00"} {
		_, err := gearman.ParseAdmin([]byte(blank))
		require.ErrorIs(t, err, gearman.ErrEmptyAdminLine, "%q", blank)
	}
}
