# presenced — see README.md. Everything here needs only Go (and, for the Redis
# and browser tests, redis-server and chromium on PATH: .ci/run installs them).
GO      ?= go
PKGS    ?= ./...
ADDR    ?= :8080

.PHONY: run build test test-short bench bench-full generate check-generate lint vendor screenshots soak clean image image-test
CONTAINER ?= podman
IMAGE     ?= presenced:latest
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null)
# Extra build flags. On a VM with hybrid cgroups and no CAP_SYS_RESOURCE (this project's CI machine), podman's
# default crun cannot run RUN steps: IMAGE_FLAGS="--runtime runc --ulimit nofile=4096:4096 --ulimit nproc=1024:1024"
IMAGE_FLAGS ?=

## run: the gateway with the embedded store and the dev demo at http://localhost:8080/
run:
	$(GO) run ./cmd/presenced --dev --addr $(ADDR)

build:
	$(GO) build -trimpath -o bin/presenced ./cmd/presenced

## image: the container image (deploy/Dockerfile: static binary on scratch, non-root); needs access to docker.io
## for the golang build image. CONTAINER=docker works too.
image:
	$(CONTAINER) build $(IMAGE_FLAGS) -f deploy/Dockerfile --build-arg REVISION=$(REVISION) -t $(IMAGE) .

## image-test: build the Dockerfile's final stage from a local binary and run it with podman (no registry
## needed; part of make test when podman is installed, as under .ci/run)
image-test:
	$(GO) test -count=1 -run 'TestImage|TestSystemdUnit' -v ./deploy/

## test: lint, generated files in sync, then every test with the race detector
test: lint check-generate
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

test-short:
	$(GO) test -count=1 -short $(PKGS)

## bench: Go benchmarks of the store, then a quick load-tool set (cmd/presence-bench) on loopback, both
## backends, about 5 min; results in bin/bench/. See BENCHMARKS.md.
bench:
	GO=$(GO) scripts/bench.sh

## bench-full: the BENCHMARKS.md figures at full size (50,000 streams, 10,000 subscribers, …), about 30 min
bench-full:
	GO=$(GO) scripts/bench-full.sh

## soak: 3 gateway nodes on Redis, simulated tabs and API clients, one fault every 15 s (kill -9, SIGSTOP,
## CLIENT KILL TYPE pubsub, SHUTDOWN NOSAVE, DEBUG SLEEP 1) and an oracle checking every subscriber every 100 ms;
## SOAK_DURATION (default 10m); SOAK_BACKEND=single (default: one redis-server) | sentinel (primary + replica +
## 3 sentinels; adds a killed primary and SENTINEL FAILOVER) | cluster (3 primaries + 3 replicas; a killed primary,
## CLIENT KILL TYPE pubsub on one shard, a slot moved live). Report in bin/soak/report.txt (and report-BACKEND.txt)
## with per-fault recovery times; fails on any divergence past ttl + 1 s. Not in make test.
SOAK_DURATION ?= 10m
SOAK_BACKEND  ?= single
soak:
	SOAK_DURATION=$(SOAK_DURATION) SOAK_BACKEND=$(SOAK_BACKEND) $(GO) test -tags soak -count=1 -timeout 60m -run '^TestSoak$$' -v ./internal/nodetest/

generate:
	$(GO) tool templ generate

check-generate:
	$(GO) tool templ generate
	@git diff --exit-code -- '*_templ.go' || (echo "generated templ files are stale: run 'make generate' and commit" && exit 1)
	@test -z "$$(git ls-files --others --exclude-standard -- '*_templ.go')" || (echo "uncommitted generated templ files" && exit 1)

lint:
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); echo "gofmt needed"; exit 1)
	$(GO) vet $(PKGS)

## vendor: refetch htmx.org 2.0.11 + htmx-ext-sse 2.2.4, htmx.org 4.0.1 (+ its hx-sse) and the tests' axe-core 4.14.1
## from npm and verify static/vendor/SHA256SUMS and e2e/testdata/SHA256SUMS
vendor:
	scripts/vendor.sh

## screenshots: rewrite docs/*.png (demo light and dark, a 390 px phone, the embed example on its dark host) from
## headless Chromium; needs chromium on PATH
screenshots:
	PRESENCE_SCREENSHOT=1 $(GO) test -count=1 -run '^TestScreenshotDemo$$' ./e2e/

clean:
	rm -rf bin
