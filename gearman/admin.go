package gearman

import (
	"bytes"
	"errors"
	"strings"
)

// AdminCommand is a parsed admin text line such as "show jobs" or
// "maxqueue fn 10".
type AdminCommand struct {
	// Name is the lower-cased command: "status", "workers", "show jobs",
	// "show unique jobs", "cancel job", "create function", ... Multi-word
	// commands are joined with one space.
	Name string
	// Args are the remaining words, as sent.
	Args []string
}

// ErrEmptyAdminLine is returned by ParseAdmin for a blank line.
var ErrEmptyAdminLine = errors.New("gearman: empty admin line")

var twoWord = map[string]bool{
	"show jobs": true, "cancel job": true, "create function": true,
	"drop function": true, "show maxqueue": true,
}

// ParseAdmin splits an admin text line (without its line ending) into a
// command and its arguments. Words are separated by spaces or tabs; command
// words are matched case-insensitively as gearmand does. Unknown commands
// are returned as parsed; the server decides what to answer.
func ParseAdmin(line []byte) (AdminCommand, error) {
	words := strings.Fields(string(bytes.TrimRight(line, "\r\n\x00")))
	if len(words) == 0 {
		return AdminCommand{}, ErrEmptyAdminLine
	}
	name := asciiLower(words[0])
	rest := words[1:]
	if len(rest) >= 2 && name == "show" && strings.EqualFold(rest[0], "unique") && strings.EqualFold(rest[1], "jobs") {
		return AdminCommand{Name: "show unique jobs", Args: rest[2:]}, nil
	}
	if len(rest) >= 1 {
		if two := name + " " + asciiLower(rest[0]); twoWord[two] {
			return AdminCommand{Name: two, Args: rest[1:]}, nil
		}
	}
	return AdminCommand{Name: name, Args: rest}, nil
}

// asciiLower lower-cases ASCII letters only: command words are ASCII, and
// Unicode case mapping can change a word's length (and so its meaning).
func asciiLower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if c := b[j]; c >= 'A' && c <= 'Z' {
					b[j] = c + 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
