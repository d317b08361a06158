// The module of the scenario TestGearmanGoWorker runs on the worker and
// client packages of github.com/mikespook/gearman-go. Only the test and
// scripts/deps.sh read it.
// source: github.com/mikespook/gearman-go@v0.0.0-20220520031403-2a518e866145
module gearwork.test/gearman-go-worker

go 1.22

require github.com/mikespook/gearman-go v0.0.0-20220520031403-2a518e866145
