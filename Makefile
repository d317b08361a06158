.DEFAULT_GOAL := help
ITERATIONS ?= 1

help: ## show this help
	@grep -E '^[a-zA-Z/_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

serve: ## run the server with its defaults
	go run ./cmd/gearwork serve

build: ## build bin/gearwork
	go build -buildvcs=auto -o bin/gearwork ./cmd/gearwork

test: ## the whole test suite (installs what it needs)
	scripts/test.sh

test/race: ## unit and end-to-end tests with the race detector, no installs
	go test -race -count=1 ./...

lint: ## gofmt and go vet
	test -z "$$(gofmt -l .)"
	go vet ./...

bench: ## Go benchmarks with a fixed iteration count (ITERATIONS=1 for a smoke run)
	go test -run='^$$' -bench=. -benchmem -benchtime=$(ITERATIONS)x ./...

.PHONY: help serve build test test/race lint bench
