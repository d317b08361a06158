// The module file for github.com/mikespook/gearman-go (which has no go.mod
// of its own), copied with its client package into a temporary directory
// by TestGearmanGoClientSuite. Only the test and scripts/deps.sh read it.
// source: github.com/mikespook/gearman-go@v0.0.0-20220520031403-2a518e866145
module github.com/mikespook/gearman-go

go 1.22
