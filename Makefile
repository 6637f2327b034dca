# heapd — the verbs a newcomer needs. `make help` lists them.

GO        ?= go
BIN       ?= bin
PKGS      ?= ./...
STATICCHECK_VERSION ?= v0.8.2
FUZZTIME  ?= 60s
export CGO_ENABLED ?= 0

.DEFAULT_GOAL := help

.PHONY: help
help: ## show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build heapctl (and heapd when present) into ./bin
	@mkdir -p $(BIN)
	$(GO) build -trimpath -o $(BIN)/ ./cmd/...

.PHONY: demo
demo: build ## the main job: start heapd on a temporary socket, list heaps and allocate + verify on every heap through it, stop it
	@set -e; dir=$$(mktemp -d); sock=$$dir/socket; \
	./$(BIN)/heapd --socket $$sock & pid=$$!; \
	trap 'kill -TERM $$pid 2>/dev/null; wait $$pid; rm -rf $$dir' EXIT; \
	export HEAPD_SOCKET=$$sock; \
	./$(BIN)/heapctl status --wait 10s; \
	./$(BIN)/heapctl -v heaps; \
	./$(BIN)/heapctl -v alloc --all --size 1MiB --fill 0xa5

.PHONY: scanout-png
scanout-png: ## run the seed's flow (heapctl demo scanout) in the VM and keep the captured frame as out/scanout-<kernel>.png
	@mkdir -p out
	@for k in $(or $(KERNEL),$(VM_KERNELS)); do \
	  $(MAKE) -s vmrun KERNEL=$$k CMD='heapctl demo scanout --frames 30 --png -' > out/scanout-$$k.png || exit 1; \
	  echo "out/scanout-$$k.png"; done

.PHONY: test
test: lint unit vmtest scanout-png ## every test tier: lint, unit tests (-race), the real-kernel VM tier, and the scanout capture PNGs in out/

.PHONY: unit
unit: ## unit tests with the race detector (integration tests skip here with a hint)
	CGO_ENABLED=1 $(GO) test -race -count=1 $(PKGS)

.PHONY: lint
lint: ## gofmt, go vet and staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) $(PKGS)

.PHONY: fuzz
fuzz: ## run every FuzzX for FUZZTIME each (default 60s; make fuzz FUZZTIME=5s for a quick pass)
	@for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; done

DURATION  ?= 3m

.PHONY: soak
soak: ## randomized attacks mixed with normal clients against heapd for DURATION (default 3m), with leak checks; not part of make test
	CGO_ENABLED=1 $(GO) test -race -count=1 -timeout 0 -run '^TestSoak$$' -v ./test/adversarial -args -soak=$(DURATION)

.PHONY: clean
clean: ## remove build output (the VM kernel cache lives outside the repo)
	rm -rf $(BIN) out $(DIST)

include test/vm/vm.mk
include mk/dist.mk
