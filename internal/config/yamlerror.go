package config

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

var (
	unknownField = regexp.MustCompile("^(line \\d+): field (.+) not found in type \\S+$")
	wrongKind    = regexp.MustCompile("^(line \\d+): cannot unmarshal !!(\\w+)(?: `(.*)`)? into (\\S+)$")
)

// yamlError rewords the decoder's type errors for the file's author: the
// key or value in the file and what was wanted, not the Go types that
// hold them ("line 5: unknown key \"alow\"" instead of "field alow not
// found in type auth.RuleConfig"). Other errors (syntax) pass unchanged.
func yamlError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, len(te.Errors))
	for i, e := range te.Errors {
		msgs[i] = e
		if m := unknownField.FindStringSubmatch(e); m != nil {
			msgs[i] = fmt.Sprintf("%s: unknown key %q", m[1], m[2])
		} else if m := wrongKind.FindStringSubmatch(e); m != nil {
			msgs[i] = fmt.Sprintf("%s: want %s, not %s", m[1], wantOf(m[4]), gotOf(m[2], m[3]))
		}
	}
	return errors.New(strings.Join(msgs, "; "))
}

// wantOf names what a Go type holds.
func wantOf(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case goType == "string":
		return "a string"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "a whole number"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	default: // maps and structs
		return "a mapping of keys"
	}
}

// gotOf names a YAML value by its tag (and text, for a scalar).
func gotOf(tag, value string) string {
	switch tag {
	case "seq":
		return "a list"
	case "map":
		return "a mapping"
	}
	if value != "" {
		return fmt.Sprintf("%q", value)
	}
	return "a " + tag
}
