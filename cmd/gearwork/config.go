package main

import (
	_ "time/tzdata" // schedule time zones work on machines without a zoneinfo database

	"github.com/gearwork/gearwork/internal/broker"
	"github.com/gearwork/gearwork/internal/config"
)

// applyConfigFile loads the --config file, if any, into the broker's
// configuration.
func applyConfigFile(bcfg *broker.Config, path string) error {
	if path == "" {
		return nil
	}
	lc, err := config.Load(path)
	if err != nil {
		return err
	}
	bcfg.DefaultPolicy = lc.DefaultPolicy
	bcfg.Policies = lc.Policies
	bcfg.Schedules = lc.Schedules
	return nil
}
