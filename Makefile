# cairn — see README.md. Every target works from a fresh clone with Go installed.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
BIN       := bin
PKGS      := ./...
FUZZTIME  ?= 20s

.PHONY: build run test test-chaos bench bench-logstore bench-scale fuzz verify docker clean

build: ## build cairn and lockctl into ./bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/cairn ./cmd/cairn
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/lockctl ./cmd/lockctl

run: build ## run a local 3-node cluster with data in a temp dir (Ctrl-C stops it)
	./$(BIN)/cairn dev --nodes 3

# make test runs in two parallel halves so that it fits its ~10 minute
# budget on 2 cores: every package but test/, then test/'s lock and
# transaction cluster tests and a few long ones that even the halves out
# (HALF2_TESTS); and beside them the rest of test/'s cluster tests. Output
# is grouped per half (-O).
HALF2_TESTS := ^(TestLock|TestS1[3-9]|TestTxn|TestTokens|TestRepairOfMovedRange|TestIsolatedLeader|TestLinearizableUnderFaults|TestGossipRejoins)
TESTFLAGS     := -race -count=1 -timeout 15m

test: ## unit, cluster (fault injection) and short linearizability tests, with -race
	@$(MAKE) --no-print-directory -j2 -Otarget test-cluster test-units-services

.PHONY: test-cluster test-units-services
test-cluster:
	$(GO) test $(TESTFLAGS) -skip '$(HALF2_TESTS)' ./test/

test-units-services:
	$(GO) test $(TESTFLAGS) $$($(GO) list $(PKGS) | grep -v '/cairn/test$$')
	$(GO) test $(TESTFLAGS) -run '$(HALF2_TESTS)' ./test/

test-chaos: ## chaos suite (test/chaos) on a fresh docker-compose cluster: CAIRN_CHAOS_DURATION of mixed faults, default 10m
	@docker info >/dev/null 2>&1 || { echo "test-chaos needs a working docker: 'docker info' failed"; exit 1; }
	$(MAKE) cluster-down
	$(MAKE) cluster-up
	CAIRN_CHAOS_DOCKER=1 CAIRN_CHAOS_DURATION=$(CAIRN_CHAOS_DURATION) \
	  $(GO) test -count=1 -v -timeout $(CHAOS_TIMEOUT) ./test/chaos/; \
	  rc=$$?; $(MAKE) cluster-down; exit $$rc

bench: ## cairn vs etcd, 3 nodes each on loopback (installs Debian's etcd-server if missing); writes bench/results/<date>.md and .json; ~10 min
	GO='$(GO)' ./bench/run.sh

bench-logstore: ## only make bench's raft log store rows: put on --log-store wal and boltdb, a fresh 3-node cluster each; ~2 min
	BENCH_PARTS=stores GO='$(GO)' ./bench/run.sh

bench-scale: ## idle CPU, memory and re-election time with 100/500/1000 shards (slow)
	$(GO) test -run '^$$' -bench ScaleShards -benchtime 1x -timeout 40m ./test/

fuzz: ## run every fuzz target for FUZZTIME each
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

verify: ## gofmt, go vet, staticcheck, go mod tidy check; docs and comments cite only files in the repository
	@test -z "$$(gofmt -l .)" || (echo "gofmt needed:"; gofmt -l .; exit 1)
	$(GO) test -count=1 ./docs
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)
	$(GO) mod tidy -diff

# Docker: a FROM scratch image, a docker-compose cluster (docker-compose.yml)
# and the chaos suite against it. The compose tool is "docker compose" where
# that plugin exists, else docker-compose.
COMPOSE              ?= $(shell docker compose version >/dev/null 2>&1 && echo 'docker compose' || echo docker-compose)
CAIRN_CHAOS_DURATION ?= 10m
CHAOS_TIMEOUT        ?= 60m
.PHONY: cluster-up cluster-down

docker: ## static binaries (cairn, lockctl) and a FROM scratch image (nothing is pulled)
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/image/cairn ./cmd/cairn
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/image/lockctl ./cmd/lockctl
	mkdir -p $(BIN)/image/data
	docker build -t cairn:$(VERSION) -t cairn:latest .

cluster-up: docker ## 3-node docker-compose cluster, HTTP on 127.0.0.1:7070, :7080, :7090; waits until healthy
	$(COMPOSE) -p cairn up -d
	@echo "waiting for n1 n2 n3 to report healthy (/readyz)"; \
	for i in $$(seq 1 90); do \
	  ok=0; for n in n1 n2 n3; do \
	    [ "$$(docker inspect -f '{{.State.Health.Status}}' cairn-$$n 2>/dev/null)" = healthy ] && ok=$$((ok+1)); \
	  done; \
	  if [ $$ok = 3 ]; then echo "cluster healthy: curl http://127.0.0.1:7070/v1/cluster"; exit 0; fi; \
	  sleep 2; \
	done; \
	echo "cluster not healthy after 180s:"; $(COMPOSE) -p cairn ps; exit 1

cluster-down: ## remove the docker-compose cluster: containers, network and volumes (data)
	$(COMPOSE) -p cairn --profile five down -v --remove-orphans

clean:
	rm -rf $(BIN)
