package main

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"

	_ "time/tzdata" // schedule time zones work on machines without a zoneinfo database

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/config"
)

// applyConfigFile loads the --config file, if any, into the broker's
// configuration, and logs what it set: authRules is the number of rules
// of its auth: section (read by securityConfig.load).
func applyConfigFile(bcfg *broker.Config, path string, authRules int, log *slog.Logger) error {
	if path == "" {
		log.Info("serve: no configuration file (--config): default policy for every function, no schedules, no auth rules")
		return nil
	}
	lc, err := config.Load(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	bcfg.DefaultPolicy = lc.DefaultPolicy
	bcfg.Policies = lc.Policies
	bcfg.Schedules = lc.Schedules
	fns := slices.Sorted(maps.Keys(lc.Policies))
	log.Info("serve: configuration file loaded", slog.String("file", path),
		slog.Bool("default_policy_set", !lc.DefaultPolicy.IsZero()),
		slog.Int("functions_with_policies", len(fns)), slog.String("functions", strings.Join(fns, ",")),
		slog.Int("schedules", len(lc.Schedules)), slog.Int("auth_rules", authRules))
	return nil
}
