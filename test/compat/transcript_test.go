package compat

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/gearwork/gearwork/gearman"
	"github.com/gearwork/gearwork/internal/gearmantest/wire"
)

// The C:/S: transcripts in docs/protocol.md are produced by these scripts
// against a fresh gearwork and checked here, so the document shows bytes
// the server really sends. Run with GEARWORK_PRINT_TRANSCRIPTS=1 (and -v)
// to print them after a change.
//
// Notation: "C:" is a client sending, "W:" a worker sending, "A:" an admin
// connection sending a text line; "S→C:", "S→W:" and "S→A:" are the
// server's answers on those connections ("S:" when only one connection
// takes part). A binary packet shows as its type followed by its
// arguments, Go-quoted; a text line shows as it is sent, with \r\n.
// Times in admin answers (RFC 3339, UTC) show as <time>, like handles
// show renumbered: they differ from run to run.

// step is one line of a transcript script.
type step struct {
	who  string // "C", "C2", "W", "W2", "A"
	send []byte // a packet or text line to send; nil means receive one
	// text marks a text-line answer to receive (up to "." for lists).
	text string
	// ask holds text lines to send, each followed by its answer.
	ask []string
	// wait is run before the step (for example, to poll for a timeout).
	wait func(t *testing.T, s *server)
}

func sendP(who string, cmd gearman.Command, args ...string) step {
	return step{who: who, send: wire.Request(cmd, args...)}
}

func recv(who string) step { return step{who: who} }

func sendText(who, line string) step {
	return step{who: who, send: []byte(line + "\r\n"), text: line}
}

// ask is who sending each text line in turn and receiving its answer.
func ask(who string, lines ...string) step { return step{who: who, ask: lines} }

// expanded returns steps with each ask step as its sends and receives.
func expanded(steps []step) []step {
	var out []step
	for _, st := range steps {
		if st.ask == nil {
			out = append(out, st)
			continue
		}
		for _, line := range st.ask {
			out = append(out, sendText(st.who, line), recv(st.who))
		}
	}
	return out
}

type transcript struct {
	name string
	args []string // extra gearwork serve flags
	// config, if set, is written to a file given to --config.
	config string
	steps  []step
	// single: only one connection; use "C:"/"S:".
	single bool
	// gearmand names the items of "Differences from gearmand" in
	// docs/protocol.md that explain why the same script against gearmand
	// 1.1.20 answers otherwise; empty when it answers the same.
	gearmand []int
}

var transcripts = []transcript{
	{name: "echo", single: true, steps: []step{
		sendP("C", gearman.EchoReq, "hello"), recv("C"),
	}},
	{name: "foreground", steps: []step{
		sendP("W", gearman.CanDo, "reverse"),
		sendP("W", gearman.PreSleep),
		sendP("C", gearman.SubmitJob, "reverse", "", "hello"), recv("C"),
		recv("W"),
		sendP("W", gearman.GrabJobUniq), recv("W"),
		sendP("W", gearman.WorkData, handlePrefix+"1", "partial"),
		sendP("W", gearman.WorkStatus, handlePrefix+"1", "1", "2"),
		sendP("W", gearman.WorkWarning, handlePrefix+"1", "careful"),
		sendP("W", gearman.WorkComplete, handlePrefix+"1", "olleh"),
		recv("C"), recv("C"), recv("C"), recv("C"),
	}},
	{name: "background-status", steps: []step{
		sendP("C", gearman.SubmitJobBg, "resize", "img-1", "photo.jpg"), recv("C"),
		sendP("C", gearman.GetStatus, handlePrefix+"1"), recv("C"),
		sendP("W", gearman.CanDo, "resize"),
		sendP("W", gearman.GrabJob), recv("W"),
		sendP("W", gearman.WorkStatus, handlePrefix+"1", "3", "10"),
		sendP("W", gearman.EchoReq, ""), recv("W"),
		sendP("C", gearman.GetStatus, handlePrefix+"1"), recv("C"),
		sendP("C", gearman.GetStatusUnique, "img-1"), recv("C"),
		sendP("W", gearman.WorkComplete, handlePrefix+"1", ""),
		sendP("W", gearman.GrabJob), recv("W"),
		sendP("C", gearman.GetStatus, handlePrefix+"1"), recv("C"),
	}},
	{name: "priorities", steps: []step{
		sendP("C", gearman.SubmitJobLowBg, "a", "", "low"), recv("C"),
		sendP("C", gearman.SubmitJobBg, "b", "", "normal"), recv("C"),
		sendP("C", gearman.SubmitJobHighBg, "b", "", "high"), recv("C"),
		sendP("W", gearman.CanDo, "a"),
		sendP("W", gearman.CanDo, "b"),
		sendP("W", gearman.GrabJob), recv("W"),
		sendP("W", gearman.WorkComplete, handlePrefix+"3", ""),
		sendP("W", gearman.GrabJob), recv("W"),
		sendP("W", gearman.WorkComplete, handlePrefix+"2", ""),
		sendP("W", gearman.GrabJob), recv("W"),
		sendP("W", gearman.WorkComplete, handlePrefix+"1", ""),
		sendP("W", gearman.GrabJob), recv("W"),
	}},
	{name: "coalescing", steps: []step{
		sendP("W", gearman.CanDo, "report"),
		sendP("C", gearman.SubmitJob, "report", "daily-2026-01-01", "params"), recv("C"),
		sendP("W", gearman.GrabJobUniq), recv("W"),
		sendP("C2", gearman.SubmitJobHigh, "report", "daily-2026-01-01", "params"), recv("C2"),
		sendP("C2", gearman.GetStatusUnique, "daily-2026-01-01"), recv("C2"),
		sendP("W", gearman.WorkComplete, handlePrefix+"1", "pdf"),
		recv("C"), recv("C2"),
	}},
	{name: "exceptions", gearmand: []int{9, 23}, steps: []step{
		sendP("C", gearman.OptionReq, "exceptions"), recv("C"),
		sendP("W", gearman.CanDo, "risky"),
		sendP("C", gearman.SubmitJob, "risky", "r-1", "x"), recv("C"),
		sendP("C2", gearman.SubmitJob, "risky", "r-1", "x"), recv("C2"),
		sendP("W", gearman.GrabJob), recv("W"),
		sendP("W", gearman.WorkException, handlePrefix+"1", "disk full"),
		recv("C"), recv("C2"),
		sendP("W", gearman.WorkFail, handlePrefix+"1"),
		sendP("C", gearman.SubmitJob, "risky", "", "y"), recv("C"),
		sendP("W", gearman.GrabJob), recv("W"),
		sendP("W", gearman.WorkFail, handlePrefix+"2"),
		recv("C"),
		sendP("W", gearman.WorkComplete, handlePrefix+"2", "late"), recv("W"),
	}},
	{name: "grab-all", steps: []step{
		sendP("C", gearman.SubmitReduceJobBg, "count", "c-1", "sum", "", "1 2 3"), recv("C"),
		sendP("C", gearman.SubmitJobBg, "count", "-", "4 5"), recv("C"),
		sendP("W", gearman.CanDo, "count"),
		sendP("W", gearman.GrabJobAll), recv("W"),
		sendP("W", gearman.GrabJobAll), recv("W"),
		sendP("W", gearman.GrabJobAll), recv("W"),
	}},
	{name: "can-do-timeout", gearmand: []int{22}, steps: []step{
		sendP("W", gearman.CanDoTimeout, "slow", "1000"),
		sendP("C", gearman.SubmitJob, "slow", "", "x"), recv("C"),
		sendP("W", gearman.GrabJob), recv("W"),
		recv("C"),
		sendP("W", gearman.WorkComplete, handlePrefix+"1", "too late"),
		sendP("W", gearman.GrabJob), recv("W"),
	}},
	{name: "epoch", gearmand: []int{4}, steps: []step{
		sendP("C", gearman.SubmitJobEpoch, "remind", "", "4102444800", "new century"), recv("C"),
		sendP("C", gearman.GetStatus, handlePrefix+"1"), recv("C"),
		sendP("W", gearman.CanDo, "remind"),
		sendP("W", gearman.GrabJob), recv("W"),
		ask("A", "status", "prioritystatus"),
	}},
	{name: "sched", gearmand: []int{5}, steps: []step{
		sendP("C", gearman.SubmitJobSched, "new-year", "", "0", "12", "1", "1", "", "fireworks"), recv("C"),
		sendP("C", gearman.GetStatus, handlePrefix+"1"), recv("C"),
		sendP("W", gearman.CanDo, "new-year"),
		sendP("W", gearman.GrabJob), recv("W"),
		ask("A", "cancel job "+handlePrefix+"1"),
		sendP("C", gearman.GetStatus, handlePrefix+"1"), recv("C"),
		sendP("C", gearman.SubmitJobSched, "new-year", "", "0", "25", "", "", "", "x"), recv("C"),
	}},
	{name: "unsupported", single: true, gearmand: []int{6, 17}, steps: []step{
		sendP("C", gearman.AllYours),
		sendP("C", gearman.OptionReq, "no-such-option"), recv("C"),
		sendP("C", gearman.JobCreated, "H:x:1"), recv("C"),
		{who: "C", send: gearman.AppendPacket(nil, gearman.MagicReq, 99)}, recv("C"),
		sendP("C", gearman.SubmitJob, "f"), recv("C"),
		sendP("C", gearman.SubmitJob, "f", strings.Repeat("u", 65), "x"), recv("C"),
		sendP("C", gearman.EchoReq, "still connected"), recv("C"),
	}},
	{name: "oversize", single: true, gearmand: []int{17}, steps: []step{
		{who: "C", send: []byte("\x00REQ\x00\x00\x00\x07\x7f\xff\xff\xff")}, recv("C"),
	}},
	{name: "bad-magic", single: true, gearmand: []int{17}, steps: []step{
		{who: "C", send: []byte("\x00RQE\x00\x00\x00\x07\x00\x00\x00\x00")}, recv("C"),
	}},
	{name: "maxqueue", gearmand: []int{11}, steps: []step{
		ask("A", "maxqueue mail 1", "show maxqueue"),
		sendP("C", gearman.SubmitJobBg, "mail", "", "one"), recv("C"),
		sendP("C", gearman.SubmitJobBg, "mail", "", "two"), recv("C"),
		ask("A", "maxqueue mail 10 5 0", "show maxqueue mail", "maxqueue mail",
			"show maxqueue mail"),
	}},
	{name: "admin", gearmand: []int{7, 14, 15, 16, 26}, steps: []step{
		sendP("C", gearman.SubmitJobBg, "thumb", "t-1", "a.png"), recv("C"),
		sendP("C", gearman.SubmitJobHighBg, "thumb", "t-2", "b.png"), recv("C"),
		sendP("W", gearman.SetClientID, "thumbnailer-1"),
		sendP("W", gearman.CanDo, "thumb"),
		sendP("W", gearman.CanDo, "crop"),
		sendP("W", gearman.GrabJob), recv("W"),
		ask("A", "status", "prioritystatus", "workers", "show jobs", "show unique jobs",
			"cancel job "+handlePrefix+"1", "cancel job "+handlePrefix+"1",
			"create function archive", "drop function archive", "drop function thumb",
			"drop function nothing", "version", "verbose", "show", "frobnicate"),
		sendP("W", gearman.CantDo, "crop"),
		sendP("W", gearman.EchoReq, ""), recv("W"),
		ask("A", "workers"),
		sendP("W", gearman.ResetAbilities),
		sendP("W", gearman.EchoReq, ""), recv("W"),
		ask("A", "workers"),
	}},
	{name: "policy", single: true, gearmand: []int{24}, steps: []step{
		ask("C", "policy resize max_attempts=2 backoff=2s timeout=30s", "create function resize",
			"policy resize max_attempts=2 backoff=2s timeout=30s", "show policy resize",
			"policy resize speed=9", "policy resize reset", "show policy"),
	}},
	{name: "dead-letters", gearmand: []int{18, 19, 24}, steps: []step{
		ask("A", "create function resize", "policy resize max_attempts=2 backoff=1ms"),
		sendP("C", gearman.SubmitJobBg, "resize", "img-7", "/uploads/7.png"), recv("C"),
		sendP("W", gearman.CanDo, "resize"),
		sendP("W", gearman.GrabJob), recv("W"),
		sendP("W", gearman.WorkException, handlePrefix+"1", "disk full"),
		sendP("W", gearman.PreSleep), recv("W"),
		sendP("W", gearman.GrabJob), recv("W"),
		sendP("W", gearman.WorkException, handlePrefix+"1", "disk full"),
		ask("A", "deadletters resize", "deadletter show "+handlePrefix+"1",
			"deadletter retry "+handlePrefix+"1"),
		sendP("W", gearman.GrabJob), recv("W"),
		sendP("W", gearman.WorkComplete, handlePrefix+"1", ""),
		ask("A", "deadletter show "+handlePrefix+"1", "deadletter retry all resize",
			"deadletter purge resize"),
	}},
	{name: "pause", gearmand: []int{21, 24}, steps: []step{
		ask("A", "pause rezise"),
		sendP("C", gearman.SubmitJobBg, "resize", "img-8", "/uploads/8.png"), recv("C"),
		ask("A", "pause resize"),
		sendP("W", gearman.CanDo, "resize"),
		sendP("W", gearman.GrabJob), recv("W"),
		sendP("W", gearman.PreSleep),
		ask("A", "resume resize"),
		recv("W"),
		sendP("W", gearman.GrabJob), recv("W"),
		ask("A", "pause resize until 30m", "pause resize until 2030-01-01T08:00:00Z",
			"pause resize until tomorrow", "resume resize"),
	}},
	{name: "results", gearmand: []int{20, 24}, steps: []step{
		ask("A", "create function thumb", "policy thumb result_retention=1h"),
		sendP("C", gearman.SubmitJobBg, "thumb", "t-9", "a.png"), recv("C"),
		sendP("W", gearman.CanDo, "thumb"),
		sendP("W", gearman.GrabJob), recv("W"),
		sendP("W", gearman.WorkComplete, handlePrefix+"1", "thumb\nof a.png"),
		ask("A", "result "+handlePrefix+"1", "result unique:t-9"),
		sendP("C2", gearman.SubmitJob, "thumb", "t-9", "a.png"), recv("C2"), recv("C2"),
		ask("A", "result unique:t-10"),
	}},
	{name: "ordering", single: true, gearmand: []int{24}, steps: []step{
		ask("C", "create function pay", "policy pay ordering=unique-prefix"),
		sendP("C", gearman.SubmitJobBg, "pay", "acct-42:1", "a"), recv("C"),
		sendP("C", gearman.SubmitJobBg, "pay", "acct-42:2", "b"), recv("C"),
		sendP("C", gearman.SubmitJobBg, "pay", "acct-7:1", "c"), recv("C"),
		ask("C", "show ordering pay"),
	}},
	{name: "schedules", single: true, gearmand: []int{24}, config: schedulesConfig, steps: []step{
		ask("C", "show schedules"),
	}},
	{name: "shutdown", single: true, gearmand: []int{12}, steps: []step{
		ask("C", "shutdown"),
	}},
}

// schedulesConfig is the --config of the schedules transcript.
const schedulesConfig = `schedules:
  - name: nightly-report
    function: report
    cron: "0 3 * * *"
`

// timeRE matches the RFC 3339 times of admin answers.
var timeRE = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)

// renderPacket shows a packet as "TYPE "arg" "arg"".
func renderPacket(raw []byte) string {
	m, cmd, size, err := gearman.ParseHeader(raw, 0)
	if err != nil {
		return fmt.Sprintf("%q", raw)
	}
	var sb strings.Builder
	if m == gearman.MagicRes {
		sb.WriteString("RES ")
	} else {
		sb.WriteString("REQ ")
	}
	sb.WriteString(cmd.String())
	if len(raw) < gearman.HeaderSize+size {
		fmt.Fprintf(&sb, " (header only, announcing a %d-byte body)", size)
		return sb.String()
	}
	body := raw[gearman.HeaderSize : gearman.HeaderSize+size]
	if !cmd.Valid() {
		fmt.Fprintf(&sb, " %q", body)
		return sb.String()
	}
	if cmd.NumArgs() == 0 {
		return sb.String()
	}
	args, ok := gearman.SplitArgs(nil, body, cmd.NumArgs())
	if !ok {
		args, _ = gearman.SplitArgs(nil, body, strings.Count(string(body), "\x00")+1)
	}
	for _, a := range args {
		if len(a) > 80 {
			fmt.Fprintf(&sb, " %q...(%d bytes)", a[:80], len(a))
			continue
		}
		fmt.Fprintf(&sb, " %q", a)
	}
	return sb.String()
}

// runTranscript runs one script against a fresh gearwork and returns its
// rendering.
func runTranscript(t *testing.T, tr transcript) string {
	t.Helper()
	args := tr.args
	if tr.config != "" {
		file := filepath.Join(t.TempDir(), "gearwork.yaml")
		require.NoError(t, os.WriteFile(file, []byte(tr.config), 0o600))
		args = append([]string{"--config", file}, args...)
	}
	return runScript(t, tr, startGearwork(t, args...))
}

// runScript runs the steps of tr against s and returns their rendering.
// Against gearmand an answer that does not come within lenientWait shows
// as "(no answer)".
func runScript(t *testing.T, tr transcript, s *server) string {
	t.Helper()
	// Handles are numbered from the server's start time; the scripts
	// and the rendering use H:compat:1, H:compat:2, ... in the order the
	// server created them.
	h := &handleMap{toReal: map[string]string{}, toSym: map[string]string{}}
	conns := map[string]*rawConn{}
	conn := func(who string) *rawConn {
		if c := conns[who]; c != nil {
			return c
		}
		c := dialRaw(t, s)
		c.lenient = !s.isGearwork()
		conns[who] = c
		return c
	}
	var out strings.Builder
	lastText := map[string]string{}
	for _, st := range expanded(tr.steps) {
		if st.wait != nil {
			st.wait(t, s)
		}
		c := conn(st.who)
		if st.send != nil {
			if c.lenient {
				// gearmand may have closed the connection: what it does
				// not answer shows as "(no answer)".
				_ = c.NC.SetWriteDeadline(time.Now().Add(lenientWait))
				_, _ = c.NC.Write(h.real(st.send, st.text != ""))
			} else {
				c.Write(h.real(st.send, st.text != ""))
			}
			who := st.who
			if tr.single {
				who = "C"
			}
			who = strings.TrimRight(who, "0123456789") + strings.TrimLeft(who, "CWA")
			if st.text != "" {
				lastText[st.who] = st.text
				fmt.Fprintf(&out, "%s: %s\\r\\n\n", who, st.text)
			} else {
				fmt.Fprintf(&out, "%s: %s\n", who, renderPacket(st.send))
			}
			if !tr.single && st.text == "" {
				// Let the server handle it before another connection
				// speaks, so the transcript order is the server's order.
				c.sync()
			}
			continue
		}
		// Receive one answer.
		prefix := "S→" + st.who + ": "
		if tr.single {
			prefix = "S: "
		}
		if len(c.queued) > 0 {
			fmt.Fprintf(&out, "%s%s\n", prefix, renderPacket(h.symbolic(c.recvQueued())))
			continue
		}
		wait := ioTimeout
		if c.lenient {
			wait = lenientWait
		}
		_ = c.NC.SetReadDeadline(time.Now().Add(wait))
		first, err := c.R.Peek(1)
		if c.lenient && err != nil {
			fmt.Fprintf(&out, "%s(no answer)\n", prefix)
			continue
		}
		require.NoError(t, err)
		if first[0] != 0 {
			_ = c.NC.SetReadDeadline(time.Now().Add(wait))
			cmd := lastText[st.who]
			for n := 0; ; n++ {
				line, err := c.R.ReadString('\n')
				if c.lenient && err != nil {
					fmt.Fprintf(&out, "%s(no answer)\n", prefix)
					break
				}
				require.NoError(t, err)
				line = timeRE.ReplaceAllString(h.symbolicText(line), "<time>")
				fmt.Fprintf(&out, "%s%s\n", prefix, escapeLine(line))
				if n, ok := strings.CutPrefix(line, "OK "); ok && strings.HasPrefix(cmd, "result ") {
					// "OK <length>", then the data and a newline.
					size, err := strconv.Atoi(strings.TrimSpace(n))
					require.NoError(t, err)
					data := make([]byte, size+1)
					_, err = io.ReadFull(c.R, data)
					require.NoError(t, err)
					fmt.Fprintf(&out, "%s%s\n", prefix, escapeLine(string(data)))
				}
				if adminAnswerEnds(cmd, line, n == 0) {
					break
				}
			}
			continue
		}
		raw := c.recvQueued()
		if raw == nil {
			fmt.Fprintf(&out, "%s(no answer)\n", prefix)
			continue
		}
		fmt.Fprintf(&out, "%s%s\n", prefix, renderPacket(h.symbolic(raw)))
	}
	return out.String()
}

// escapeLine spells out a text line's line breaks and tabs.
func escapeLine(s string) string {
	return strings.NewReplacer("\r", `\r`, "\n", `\n`, "\t", `\t`).Replace(s)
}

func TestProtocolTranscripts(t *testing.T) {
	t.Parallel()
	_, file, _, _ := runtime.Caller(0)
	docPath := filepath.Join(filepath.Dir(file), "..", "..", "docs", "protocol.md")
	doc, err := os.ReadFile(docPath)
	require.NoError(t, err)
	print := os.Getenv("GEARWORK_PRINT_TRANSCRIPTS") == "1"
	listed := listedDifferences(t, string(doc))
	for _, tr := range transcripts {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			got := runTranscript(t, tr)
			if print {
				t.Logf("transcript %s:\n%s", tr.name, got)
			}
			require.Contains(t, string(doc), "```\n"+got+"```\n",
				"docs/protocol.md lacks the %s transcript as gearwork answers it today", tr.name)

			// The same script against gearmand: every difference must be
			// one that docs/protocol.md lists.
			ref := runScript(t, tr, startGearmand(t))
			if print {
				t.Logf("transcript %s against gearmand:\n%s", tr.name, ref)
			}
			if ref == got {
				require.Empty(t, tr.gearmand, "the %s transcript is the same against gearmand now: drop the differences it names", tr.name)
				return
			}
			if len(tr.gearmand) == 0 {
				t.Fatalf("the %s transcript differs from gearmand's, and no item of \"Differences from gearmand\" is named for it:\n%s",
					tr.name, lineDiff(ref, got))
			}
			for _, n := range tr.gearmand {
				require.True(t, listed[n], "the %s transcript names difference %d, which docs/protocol.md does not list", tr.name, n)
			}
			t.Logf("the %s transcript differs from gearmand's as differences %v say:\n%s", tr.name, tr.gearmand, lineDiff(ref, got))
		})
	}
}

// listedDifferences returns the numbers of the items of the section
// "Differences from gearmand" of docs/protocol.md.
func listedDifferences(t *testing.T, doc string) map[int]bool {
	t.Helper()
	_, section, ok := strings.Cut(doc, "\n## Differences from gearmand")
	require.True(t, ok, "docs/protocol.md has a section \"Differences from gearmand\"")
	section, _, _ = strings.Cut(section, "\n## ")
	out := map[int]bool{}
	for _, m := range regexp.MustCompile(`(?m)^(\d+)\. \*\*`).FindAllStringSubmatch(section, -1) {
		n, _ := strconv.Atoi(m[1])
		out[n] = true
	}
	require.NotEmpty(t, out)
	return out
}

// lineDiff shows the lines of two renderings side by side where they
// differ ("gearmand:" / "gearwork:").
func lineDiff(gearmand, gearwork string) string {
	a, b := strings.Split(gearmand, "\n"), strings.Split(gearwork, "\n")
	var sb strings.Builder
	for i := range max(len(a), len(b)) {
		var x, y string
		if i < len(a) {
			x = a[i]
		}
		if i < len(b) {
			y = b[i]
		}
		if x != y {
			fmt.Fprintf(&sb, "  gearmand: %s\n  gearwork: %s\n", x, y)
		}
	}
	return sb.String()
}

// syncPayload marks the ECHO_REQ that sync sends.
const syncPayload = "\x00transcript-sync"

// sync makes sure the server has handled everything sent on c: it sends an
// ECHO_REQ and reads up to its ECHO_RES, keeping the packets that came
// before it for recvQueued.
func (c *rawConn) sync() {
	c.T.Helper()
	c.Send(gearman.EchoReq, syncPayload)
	want := string(wire.Response(gearman.EchoRes, syncPayload))
	for {
		raw := c.recvLenient()
		if raw == nil || string(raw) == want {
			return
		}
		c.queued = append(c.queued, raw)
	}
}

// recvQueued returns the next packet kept by sync, or reads one; nil when
// a lenient connection got none.
func (c *rawConn) recvQueued() []byte {
	c.T.Helper()
	if len(c.queued) > 0 {
		raw := c.queued[0]
		c.queued = c.queued[1:]
		return raw
	}
	return c.recvLenient()
}

// recvLenient reads one packet; on a lenient connection a missing answer
// (or a closed connection) gives nil instead of failing.
func (c *rawConn) recvLenient() []byte {
	c.T.Helper()
	if !c.lenient {
		_, raw := c.Next()
		return raw
	}
	_, raw, err := c.NextWithin(lenientWait)
	if err != nil {
		return nil
	}
	return raw
}

// handleMap translates between the server's job handles and the symbolic
// ones (H:compat:1, ...) that the scripts and the document use: the n-th
// handle the server announces in a JOB_CREATED is H:compat:n.
type handleMap struct {
	toReal, toSym map[string]string
	n             int
}

// symbolic rewrites a received packet's handle arguments, learning new
// handles from JOB_CREATED.
func (h *handleMap) symbolic(raw []byte) []byte {
	_, cmd, size, err := gearman.ParseHeader(raw, 0)
	if err != nil || !cmd.Valid() || len(raw) < gearman.HeaderSize+size {
		return raw
	}
	args, ok := gearman.SplitArgs(nil, raw[gearman.HeaderSize:], cmd.NumArgs())
	if !ok {
		return raw
	}
	if cmd == gearman.JobCreated {
		real := string(args[0])
		if _, known := h.toSym[real]; !known {
			h.n++
			sym := fmt.Sprintf("%s%d", handlePrefix, h.n)
			h.toSym[real], h.toReal[sym] = sym, real
		}
	}
	out := make([][]byte, len(args))
	for i, a := range args {
		out[i] = a
		if sym, ok := h.toSym[string(a)]; ok {
			out[i] = []byte(sym)
		}
	}
	return gearman.AppendPacket(nil, gearman.MagicRes, cmd, out...)
}

// symbolicText rewrites handles in a received admin line.
func (h *handleMap) symbolicText(line string) string {
	for real, sym := range h.toSym {
		line = strings.ReplaceAll(line, real, sym)
	}
	return line
}

// real rewrites symbolic handles in a packet or text line to send.
func (h *handleMap) real(b []byte, text bool) []byte {
	if text {
		words := strings.Split(string(b), " ")
		for i, w := range words {
			if r, ok := h.toReal[strings.TrimRight(w, "\r\n")]; ok {
				words[i] = r + w[len(strings.TrimRight(w, "\r\n")):]
			}
		}
		return []byte(strings.Join(words, " "))
	}
	m, cmd, size, err := gearman.ParseHeader(b, 0)
	if err != nil || !cmd.Valid() || len(b) < gearman.HeaderSize+size || cmd.NumArgs() == 0 {
		return b
	}
	args, ok := gearman.SplitArgs(nil, b[gearman.HeaderSize:], cmd.NumArgs())
	if !ok {
		return b
	}
	out := make([][]byte, len(args))
	for i, a := range args {
		out[i] = a
		if r, ok := h.toReal[string(a)]; ok {
			out[i] = []byte(r)
		}
	}
	return gearman.AppendPacket(nil, m, cmd, out...)
}
