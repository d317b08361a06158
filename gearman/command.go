package gearman

import "strconv"

// Command is a Gearman packet type.
type Command uint32

// The Gearman packet types, numbered as in the protocol specification.
const (
	CanDo             Command = 1
	CantDo            Command = 2
	ResetAbilities    Command = 3
	PreSleep          Command = 4
	unused5           Command = 5
	Noop              Command = 6
	SubmitJob         Command = 7
	JobCreated        Command = 8
	GrabJob           Command = 9
	NoJob             Command = 10
	JobAssign         Command = 11
	WorkStatus        Command = 12
	WorkComplete      Command = 13
	WorkFail          Command = 14
	GetStatus         Command = 15
	EchoReq           Command = 16
	EchoRes           Command = 17
	SubmitJobBg       Command = 18
	Error             Command = 19
	StatusRes         Command = 20
	SubmitJobHigh     Command = 21
	SetClientID       Command = 22
	CanDoTimeout      Command = 23
	AllYours          Command = 24
	WorkException     Command = 25
	OptionReq         Command = 26
	OptionRes         Command = 27
	WorkData          Command = 28
	WorkWarning       Command = 29
	GrabJobUniq       Command = 30
	JobAssignUniq     Command = 31
	SubmitJobHighBg   Command = 32
	SubmitJobLow      Command = 33
	SubmitJobLowBg    Command = 34
	SubmitJobSched    Command = 35
	SubmitJobEpoch    Command = 36
	SubmitReduceJob   Command = 37
	SubmitReduceJobBg Command = 38
	GrabJobAll        Command = 39
	JobAssignAll      Command = 40
	GetStatusUnique   Command = 41
	StatusResUnique   Command = 42
	maxCommand        Command = 43
)

type commandInfo struct {
	name string
	// args is the number of NUL-separated arguments, the last one taking
	// the rest of the body.
	args int
}

var commands = [maxCommand]commandInfo{
	CanDo:             {"CAN_DO", 1},
	CantDo:            {"CANT_DO", 1},
	ResetAbilities:    {"RESET_ABILITIES", 0},
	PreSleep:          {"PRE_SLEEP", 0},
	unused5:           {"UNUSED", 0},
	Noop:              {"NOOP", 0},
	SubmitJob:         {"SUBMIT_JOB", 3},
	JobCreated:        {"JOB_CREATED", 1},
	GrabJob:           {"GRAB_JOB", 0},
	NoJob:             {"NO_JOB", 0},
	JobAssign:         {"JOB_ASSIGN", 3},
	WorkStatus:        {"WORK_STATUS", 3},
	WorkComplete:      {"WORK_COMPLETE", 2},
	WorkFail:          {"WORK_FAIL", 1},
	GetStatus:         {"GET_STATUS", 1},
	EchoReq:           {"ECHO_REQ", 1},
	EchoRes:           {"ECHO_RES", 1},
	SubmitJobBg:       {"SUBMIT_JOB_BG", 3},
	Error:             {"ERROR", 2},
	StatusRes:         {"STATUS_RES", 5},
	SubmitJobHigh:     {"SUBMIT_JOB_HIGH", 3},
	SetClientID:       {"SET_CLIENT_ID", 1},
	CanDoTimeout:      {"CAN_DO_TIMEOUT", 2},
	AllYours:          {"ALL_YOURS", 0},
	WorkException:     {"WORK_EXCEPTION", 2},
	OptionReq:         {"OPTION_REQ", 1},
	OptionRes:         {"OPTION_RES", 1},
	WorkData:          {"WORK_DATA", 2},
	WorkWarning:       {"WORK_WARNING", 2},
	GrabJobUniq:       {"GRAB_JOB_UNIQ", 0},
	JobAssignUniq:     {"JOB_ASSIGN_UNIQ", 4},
	SubmitJobHighBg:   {"SUBMIT_JOB_HIGH_BG", 3},
	SubmitJobLow:      {"SUBMIT_JOB_LOW", 3},
	SubmitJobLowBg:    {"SUBMIT_JOB_LOW_BG", 3},
	SubmitJobSched:    {"SUBMIT_JOB_SCHED", 8},
	SubmitJobEpoch:    {"SUBMIT_JOB_EPOCH", 4},
	SubmitReduceJob:   {"SUBMIT_REDUCE_JOB", 5},
	SubmitReduceJobBg: {"SUBMIT_REDUCE_JOB_BACKGROUND", 5},
	GrabJobAll:        {"GRAB_JOB_ALL", 0},
	JobAssignAll:      {"JOB_ASSIGN_ALL", 5},
	GetStatusUnique:   {"GET_STATUS_UNIQUE", 1},
	StatusResUnique:   {"STATUS_RES_UNIQUE", 6},
}

// Valid reports whether c is a packet type of the protocol (1–42).
func (c Command) Valid() bool { return c > 0 && c < maxCommand }

// NumArgs returns how many arguments a packet of type c carries; the last
// argument extends to the end of the packet body. It returns 0 for invalid
// commands.
func (c Command) NumArgs() int {
	if !c.Valid() {
		return 0
	}
	return commands[c].args
}

// String returns the specification name, such as "SUBMIT_JOB_BG".
func (c Command) String() string {
	if !c.Valid() {
		return "UNKNOWN(" + strconv.FormatUint(uint64(c), 10) + ")"
	}
	return commands[c].name
}
