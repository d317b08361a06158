// The module file for the client package of github.com/appscode/g2 (which
// has no go.mod of its own), copied with its runtime package into a
// temporary directory by TestG2ClientSuite. Only the test and
// scripts/deps.sh read it.
// source: github.com/appscode/g2@v0.0.0-20190123131438-388ba74fd273
module github.com/appscode/g2

go 1.22

require (
	github.com/appscode/go v0.0.0-20191119085241-0887d8ec2ecc
	github.com/stretchr/testify v1.12.1
	gopkg.in/robfig/cron.v2 v2.0.0-20150107220207-be2e0b0deed5
)

require (
	github.com/golang/glog v0.0.0-20160126235308-23def4e6c14b // indirect
	github.com/google/uuid v1.1.1 // indirect
	go.yaml.in/yaml/v3 v3.0.5 // indirect
)
