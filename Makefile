# aod — see README.md. `make help` lists the targets.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/aodhq/aod/cmd/aod/aodcli.Version=$(VERSION)
# A count, not a duration: duration-based -fuzztime hits a coordinator race
# in Go 1.26 (golang/go#75804) that fails with "context deadline exceeded".
FUZZTIME  ?= 20000x
# Packages tested with -race; heavy cases run at reduced scale (D22).
TEST_FLAGS ?= -race -timeout 12m

.PHONY: help build run test vet unit fuzz bench soak clean

help: ## list targets
	@grep -E '^[a-z/-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/aod
	CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o bin/aod ./cmd/aod

run: build ## serve on ./data (embedded SQLite + local sandboxes unless configured)
	./bin/aod serve

test: vet unit fuzz ## go vet, go test -race, and short fuzz runs

vet: ## go vet ./...
	$(GO) vet ./...

unit: ## go test -race ./...
	$(GO) test $(TEST_FLAGS) ./...

fuzz: ## each fuzz target briefly, one command each (D22)
	@for target in $$(grep -rhoE '^func Fuzz[A-Za-z0-9_]+' --include='*_test.go' . | sed 's/func //' | sort -u); do \
		pkg=$$(dirname $$(grep -rlE "^func $$target\(" --include='*_test.go' . | head -1)); \
		echo "fuzz $$target in $$pkg"; \
		$(GO) test -run='^$$' -fuzz="^$$target\$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
	done

bench: ## the heaviest tests at full scale, then the benchmarks (D22; see docs/benchmarks.md)
	AOD_BENCH_SCALE=full $(GO) test -timeout 120m -run 'Conformance|Backpressure|ManySubscribers' ./...
	AOD_BENCH_SCALE=full $(GO) test -run='^$$' -bench=. -timeout 120m ./...
	$(GO) build -o /tmp/aod ./cmd/aod && $(GO) run ./cmd/aodbench -scale full -aod /tmp/aod

soak: ## the fault suite at full length: 60 s Postgres outages, 1,000,000 black-box requests (docs/reliability.md)
	AOD_SOAK=1 $(GO) test -race -count=1 -timeout 60m -run 'TestFault' ./cmd/aod/app/
	# Without -race: a million requests under the race detector take hours.
	AOD_SOAK=1 $(GO) test -count=1 -timeout 120m -v -run 'TestBlackBox' ./cmd/aod/app/

clean: ## remove build output
	rm -rf bin
