package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"

	"github.com/gearwork/gearwork/internal/auth"
)

// ParseAuth returns the auth: section of a configuration file (the
// authorization rules of docs/security.md), or nil if it has none. Other
// top-level keys are left to Parse; inside auth: unknown keys are errors,
// so that a misspelt rule cannot silently grant or deny less than
// intended. Errors name the line in the whole file.
func ParseAuth(data []byte) (*auth.Config, error) {
	var shape map[string]yaml.Node
	if err := yaml.Unmarshal(data, &shape); err != nil {
		return nil, fmt.Errorf("invalid YAML: %w", yamlError(err))
	}
	if _, ok := shape["auth"]; !ok {
		return nil, nil
	}
	// Decoded again as a whole, so that errors name the file's lines.
	var top struct {
		Auth *auth.Config `yaml:"auth"`
		// Rest holds the other sections, which Parse checks.
		Rest map[string]yaml.Node `yaml:",inline"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&top); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("auth: %w", yamlError(err))
	}
	if top.Auth == nil { // "auth:" with nothing under it
		return &auth.Config{}, nil
	}
	return top.Auth, nil
}
