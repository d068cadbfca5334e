# cairn — see README.md. Every target works from a fresh clone with Go installed.
GO        ?= go
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -s -w -X main.version=$(VERSION)
BIN       := bin
PKGS      := ./...
FUZZTIME  ?= 20s

.PHONY: build run test test-chaos bench fuzz verify docker clean

build: ## build cairn and lockctl into ./bin
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/cairn ./cmd/cairn

run: build ## run a local 3-node cluster with data in a temp dir (Ctrl-C stops it)
	./$(BIN)/cairn dev --nodes 3

test: ## unit, cluster (fault injection) and short linearizability tests, with -race
	$(GO) test -race -count=1 -timeout 15m $(PKGS)

test-chaos: ## longer chaos runs (docker-compose suite when available)
	CAIRN_CHAOS=1 $(GO) test -race -count=1 -timeout 60m -run 'Chaos|Linearizable' ./test/...

bench: ## micro and cluster benchmarks
	$(GO) test -run '^$$' -bench . -benchtime 2s ./fsm/ ./test/

fuzz: ## run every fuzz target for FUZZTIME each
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

verify: ## gofmt, go vet, staticcheck, go mod tidy check
	@test -z "$$(gofmt -l .)" || (echo "gofmt needed:"; gofmt -l .; exit 1)
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)
	$(GO) mod tidy -diff

docker: ## static binary and a FROM scratch image
	CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/cairn-linux ./cmd/cairn
	docker build -t cairn:$(VERSION) -t cairn:latest .

clean:
	rm -rf $(BIN)
