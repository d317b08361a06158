package gearman_test

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
)

func TestAppendPacket(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		magic gearman.Magic
		cmd   gearman.Command
		args  []string
		want  string
	}{
		{"no arguments", gearman.MagicRes, gearman.Noop, nil,
			"\x00RES\x00\x00\x00\x06\x00\x00\x00\x00"},
		{"one empty argument", gearman.MagicReq, gearman.EchoReq, []string{""},
			"\x00REQ\x00\x00\x00\x10\x00\x00\x00\x00"},
		{"one argument", gearman.MagicReq, gearman.CanDo, []string{"reverse"},
			"\x00REQ\x00\x00\x00\x01\x00\x00\x00\x07reverse"},
		{"three arguments", gearman.MagicReq, gearman.SubmitJob, []string{"reverse", "u1", "hello"},
			"\x00REQ\x00\x00\x00\x07\x00\x00\x00\x10reverse\x00u1\x00hello"},
		{"empty middle argument", gearman.MagicReq, gearman.SubmitJobBg, []string{"f", "", "x"},
			"\x00REQ\x00\x00\x00\x12\x00\x00\x00\x04f\x00\x00x"},
		{"data with NULs", gearman.MagicRes, gearman.WorkComplete, []string{"H:a:1", "x\x00y"},
			"\x00RES\x00\x00\x00\x0d\x00\x00\x00\x09H:a:1\x00x\x00y"},
		{"status result", gearman.MagicRes, gearman.StatusRes, []string{"H:a:1", "1", "0", "3", "10"},
			"\x00RES\x00\x00\x00\x14\x00\x00\x00\x0eH:a:1\x001\x000\x003\x0010"},
		{"error", gearman.MagicRes, gearman.Error, []string{"QUEUE_ERROR", "Job queue is full"},
			"\x00RES\x00\x00\x00\x13\x00\x00\x00\x1dQUEUE_ERROR\x00Job queue is full"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := make([][]byte, len(tc.args))
			for i, a := range tc.args {
				args[i] = []byte(a)
			}
			require.Equal(t, []byte(tc.want), gearman.AppendPacket(nil, tc.magic, tc.cmd, args...))
			// Appending keeps what the buffer held.
			got := gearman.AppendPacket([]byte("prefix"), tc.magic, tc.cmd, args...)
			require.Equal(t, []byte("prefix"+tc.want), got)
		})
	}
}

// specArgs is the argument count of every packet type as the protocol
// specification and gearmand's libgearman/command.cc define them (the last
// argument is the rest of the body).
var specArgs = map[gearman.Command]struct {
	name string
	args int
}{
	1: {"CAN_DO", 1}, 2: {"CANT_DO", 1}, 3: {"RESET_ABILITIES", 0}, 4: {"PRE_SLEEP", 0},
	5: {"UNUSED", 0}, 6: {"NOOP", 0}, 7: {"SUBMIT_JOB", 3}, 8: {"JOB_CREATED", 1},
	9: {"GRAB_JOB", 0}, 10: {"NO_JOB", 0}, 11: {"JOB_ASSIGN", 3}, 12: {"WORK_STATUS", 3},
	13: {"WORK_COMPLETE", 2}, 14: {"WORK_FAIL", 1}, 15: {"GET_STATUS", 1}, 16: {"ECHO_REQ", 1},
	17: {"ECHO_RES", 1}, 18: {"SUBMIT_JOB_BG", 3}, 19: {"ERROR", 2}, 20: {"STATUS_RES", 5},
	21: {"SUBMIT_JOB_HIGH", 3}, 22: {"SET_CLIENT_ID", 1}, 23: {"CAN_DO_TIMEOUT", 2},
	24: {"ALL_YOURS", 0}, 25: {"WORK_EXCEPTION", 2}, 26: {"OPTION_REQ", 1}, 27: {"OPTION_RES", 1},
	28: {"WORK_DATA", 2}, 29: {"WORK_WARNING", 2}, 30: {"GRAB_JOB_UNIQ", 0},
	31: {"JOB_ASSIGN_UNIQ", 4}, 32: {"SUBMIT_JOB_HIGH_BG", 3}, 33: {"SUBMIT_JOB_LOW", 3},
	34: {"SUBMIT_JOB_LOW_BG", 3}, 35: {"SUBMIT_JOB_SCHED", 8}, 36: {"SUBMIT_JOB_EPOCH", 4},
	37: {"SUBMIT_REDUCE_JOB", 5}, 38: {"SUBMIT_REDUCE_JOB_BACKGROUND", 5}, 39: {"GRAB_JOB_ALL", 0},
	40: {"JOB_ASSIGN_ALL", 5}, 41: {"GET_STATUS_UNIQUE", 1}, 42: {"STATUS_RES_UNIQUE", 6},
}

func TestCommands(t *testing.T) {
	t.Parallel()
	for c := gearman.Command(1); c <= 42; c++ {
		spec := specArgs[c]
		require.True(t, c.Valid(), "%d", c)
		require.Equal(t, spec.name, c.String(), "%d", c)
		require.Equal(t, spec.args, c.NumArgs(), "%s", spec.name)
	}
	for _, c := range []gearman.Command{0, 43, 1 << 31} {
		require.False(t, c.Valid())
		require.Equal(t, 0, c.NumArgs())
	}
	require.Equal(t, "UNKNOWN(43)", gearman.Command(43).String())
}

func TestParseHeader(t *testing.T) {
	t.Parallel()
	m, c, size, err := gearman.ParseHeader([]byte("\x00REQ\x00\x00\x00\x07\x00\x00\x01\x00"), 256)
	require.NoError(t, err)
	require.Equal(t, gearman.MagicReq, m)
	require.Equal(t, gearman.SubmitJob, c)
	require.Equal(t, 256, size)

	_, _, size, err = gearman.ParseHeader([]byte("\x00RES\x00\x00\x00\x07\x00\x00\x01\x01"), 256)
	var he *gearman.HeaderError
	require.True(t, errors.As(err, &he))
	require.Equal(t, "ARGUMENT_TOO_LARGE", he.Code)
	require.Equal(t, "packet body of 257 bytes exceeds the limit of 256 bytes", he.Text)
	require.Equal(t, 257, size)

	// The largest size a header can carry, with no limit set.
	_, _, size, err = gearman.ParseHeader([]byte("\x00REQ\x00\x00\x00\x07\xff\xff\xff\xff"), 0)
	require.NoError(t, err)
	require.Equal(t, 1<<32-1, size)

	_, _, _, err = gearman.ParseHeader([]byte("\x00REX\x00\x00\x00\x07\x00\x00\x00\x00"), 0)
	require.True(t, errors.As(err, &he))
	require.Equal(t, "INVALID_MAGIC", he.Code)
	require.Equal(t, `INVALID_MAGIC: bad packet magic "\x00REX"`, err.Error())

	_, _, _, err = gearman.ParseHeader([]byte("\x00REQ"), 0)
	require.True(t, errors.As(err, &he))
	require.Equal(t, "INVALID_PACKET", he.Code)

	// Unknown commands pass: the caller skips their body.
	_, c, _, err = gearman.ParseHeader([]byte("\x00REQ\x00\x00\x00\x63\x00\x00\x00\x00"), 0)
	require.NoError(t, err)
	require.Equal(t, gearman.Command(99), c)
}

func TestSplitArgs(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body string
		n    int
		want []string
		ok   bool
	}{
		{"", 0, []string{}, true},
		{"ignored", 0, []string{}, true},
		{"", 1, []string{""}, true},
		{"a\x00b", 1, []string{"a\x00b"}, true},
		{"a\x00b", 2, []string{"a", "b"}, true},
		{"a\x00b\x00c\x00d", 3, []string{"a", "b", "c\x00d"}, true},
		{"\x00\x00", 3, []string{"", "", ""}, true},
		{"a", 2, nil, false},
		{"a\x00b", 3, nil, false},
	}
	for _, tc := range tests {
		got, ok := gearman.SplitArgs(nil, []byte(tc.body), tc.n)
		require.Equal(t, tc.ok, ok, "%q/%d", tc.body, tc.n)
		if !ok {
			continue
		}
		strs := make([]string, len(got))
		for i, a := range got {
			strs[i] = string(a)
			if i < len(got)-1 {
				require.Equal(t, len(a), cap(a), "argument %d of %q can grow into the next one", i, tc.body)
			}
		}
		require.Equal(t, tc.want, strs, "%q/%d", tc.body, tc.n)
	}
}
