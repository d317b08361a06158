// Package config reads Gearwork's configuration file (--config
// gearwork.yaml): per-function lifecycle policies and cron schedules. It
// turns the file into the plain structs the broker takes; nothing else
// parses it.
//
// # Format
//
//	defaults:               # policy of every function without its own
//	  max_attempts: 3
//	functions:
//	  resize:               # these keys override the defaults
//	    max_attempts: 5
//	    backoff: 2s
//	    max_queue: [100, 1000, 1000]
//	schedules:
//	  - name: nightly-report
//	    function: report
//	    cron: "0 3 * * *"
//	    timezone: Europe/Berlin
//	    payload: "{}"
//	    priority: low
//	    missed: all
//
// Policy keys are those of broker.Policy.Set (see docs/lifecycle.md).
// Unknown keys, keys given twice and a second YAML document are errors,
// reported with their line. The auth: section (authorization rules,
// docs/security.md) is read by ParseAuth and skipped by Parse.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/gearwork/gearwork/internal/broker"
)

// Lifecycle is the lifecycle part of the configuration.
type Lifecycle struct {
	// DefaultPolicy applies to functions without an entry in Policies.
	DefaultPolicy broker.Policy
	// Policies are per function; each starts from DefaultPolicy.
	Policies  map[string]broker.Policy
	Schedules []broker.Schedule
}

type file struct {
	Defaults  yaml.Node            `yaml:"defaults"`
	Functions map[string]yaml.Node `yaml:"functions"`
	Schedules []scheduleEntry      `yaml:"schedules"`
	// Auth is the authorization rules' section; cmd/gearwork reads it
	// into an auth.Config (see docs/security.md). It is skipped here.
	Auth yaml.Node `yaml:"auth"`
}

type scheduleEntry struct {
	Name     string `yaml:"name"`
	Function string `yaml:"function"`
	Cron     string `yaml:"cron"`
	Timezone string `yaml:"timezone"`
	Payload  string `yaml:"payload"`
	Priority string `yaml:"priority"`
	Missed   string `yaml:"missed"`
}

// Load reads the configuration file at path.
func Load(path string) (Lifecycle, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Lifecycle{}, fmt.Errorf("config: %w", err)
	}
	lc, err := Parse(data)
	if err != nil {
		return Lifecycle{}, fmt.Errorf("config %s: %w", path, err)
	}
	return lc, nil
}

// Parse reads a configuration from YAML text.
func Parse(data []byte) (Lifecycle, error) {
	var f file
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil && !errors.Is(err, io.EOF) {
		return Lifecycle{}, yamlError(err)
	}
	// The server reads one document; what follows a "---" would be
	// ignored, however wrong. An empty one (a trailing "---") is harmless.
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return Lifecycle{}, fmt.Errorf("%w", err)
		}
		if len(next.Content) > 0 && (next.Content[0].Kind != yaml.ScalarNode || next.Content[0].Tag != "!!null") {
			return Lifecycle{}, fmt.Errorf("line %d: a second YAML document (after \"---\"): put everything in one", next.Line)
		}
	}
	var lc Lifecycle
	var err error
	if lc.DefaultPolicy, err = policy(broker.Policy{}, &f.Defaults, "defaults"); err != nil {
		return Lifecycle{}, err
	}
	lc.Policies = make(map[string]broker.Policy, len(f.Functions))
	for name, node := range f.Functions {
		if name == "" {
			return Lifecycle{}, errors.New("functions: empty function name")
		}
		if lc.Policies[name], err = policy(lc.DefaultPolicy, &node, "functions."+name); err != nil {
			return Lifecycle{}, err
		}
	}
	seen := map[string]bool{}
	for i, s := range f.Schedules {
		sc, err := schedule(s)
		if err != nil {
			return Lifecycle{}, fmt.Errorf("schedules[%d]: %w", i, err)
		}
		if seen[sc.Name] {
			return Lifecycle{}, fmt.Errorf("schedules[%d]: duplicate name %q", i, sc.Name)
		}
		seen[sc.Name] = true
		lc.Schedules = append(lc.Schedules, sc)
	}
	return lc, nil
}

// policy applies the keys of a YAML mapping to base.
func policy(base broker.Policy, n *yaml.Node, where string) (broker.Policy, error) {
	p := base
	if n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null") {
		return p, nil
	}
	if n.Kind != yaml.MappingNode {
		return p, fmt.Errorf("line %d: %s: want a mapping of policy keys", n.Line, where)
	}
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		// The mapping is read as it is, so YAML's own check for keys
		// given twice does not apply: one value would silently win.
		if line, ok := seen[k.Value]; ok {
			return p, fmt.Errorf("line %d: %s: key %q already given at line %d", k.Line, where, k.Value, line)
		}
		seen[k.Value] = k.Line
		var value string
		switch v.Kind {
		case yaml.ScalarNode:
			value = v.Value
		case yaml.SequenceNode:
			parts := make([]string, len(v.Content))
			for j, e := range v.Content {
				if e.Kind != yaml.ScalarNode {
					return p, fmt.Errorf("line %d: %s.%s: want a list of numbers", e.Line, where, k.Value)
				}
				parts[j] = e.Value
			}
			value = strings.Join(parts, ",")
		default:
			return p, fmt.Errorf("line %d: %s.%s: want a value", v.Line, where, k.Value)
		}
		if err := p.Set(k.Value, value); err != nil {
			return p, fmt.Errorf("line %d: %s: %w", k.Line, where, err)
		}
	}
	// backoff_max caps every wait, the first one too: a longer backoff
	// (say 1h, with the default cap of 10m) would never be waited.
	if err := p.Validate(); err != nil {
		return p, fmt.Errorf("line %d: %s: %w", n.Line, where, err)
	}
	return p, nil
}

func schedule(s scheduleEntry) (broker.Schedule, error) {
	if s.Name == "" || s.Function == "" || s.Cron == "" {
		return broker.Schedule{}, errors.New("name, function and cron are required")
	}
	if strings.ContainsAny(s.Name, " \t\r\n/\x00") {
		// (A tick's job has the unique NAME:TICK, which holds no NUL.)
		return broker.Schedule{}, fmt.Errorf("name %q must not contain spaces, NUL bytes or '/'", s.Name)
	}
	if len(s.Name) > broker.MaxScheduleName {
		return broker.Schedule{}, fmt.Errorf("name %q is %d bytes; at most %d (a tick's job has the unique NAME:TICK, at most 64 bytes)",
			s.Name, len(s.Name), broker.MaxScheduleName)
	}
	loc := time.UTC
	if s.Timezone != "" {
		var err error
		if loc, err = time.LoadLocation(s.Timezone); err != nil {
			return broker.Schedule{}, fmt.Errorf("timezone %q: %w", s.Timezone, err)
		}
	}
	c, err := broker.ParseCron(s.Cron, loc)
	if err != nil {
		return broker.Schedule{}, err
	}
	sc := broker.Schedule{Name: s.Name, Function: s.Function, Cron: c, Payload: []byte(s.Payload), Priority: broker.Normal}
	switch strings.ToLower(s.Priority) {
	case "", "normal":
	case "high":
		sc.Priority = broker.High
	case "low":
		sc.Priority = broker.Low
	default:
		return broker.Schedule{}, fmt.Errorf("priority %q: use high, normal or low", s.Priority)
	}
	switch broker.Missed(strings.ToLower(s.Missed)) {
	case "", "all":
		sc.Missed = broker.MissedAll
	case broker.MissedOne:
		sc.Missed = broker.MissedOne
	case broker.MissedSkip:
		sc.Missed = broker.MissedSkip
	default:
		return broker.Schedule{}, fmt.Errorf("missed %q: use all, one or skip", s.Missed)
	}
	return sc, nil
}
