// The module of the scenario TestG2Worker runs: gearman-go-worker's
// main.go with the worker package of github.com/appscode/g2 in place of
// gearman-go's (its client stays gearman-go's: g2's has no DoWithId).
// Only the test and scripts/deps.sh read it.
// source: github.com/appscode/g2@v0.0.0-20190123131438-388ba74fd273
module gearwork.test/g2-worker

go 1.22

require (
	github.com/appscode/g2 v0.0.0-20190123131438-388ba74fd273
	github.com/mikespook/gearman-go v0.0.0-20220520031403-2a518e866145
)

require (
	github.com/appscode/go v0.0.0-20191119085241-0887d8ec2ecc // indirect
	github.com/stretchr/testify v1.12.1 // indirect
	gopkg.in/robfig/cron.v2 v2.0.0-20150107220207-be2e0b0deed5 // indirect
)
