# heapd — the verbs a newcomer needs. `make help` lists them.

GO        ?= go
BIN       ?= bin
PKGS      ?= ./...
STATICCHECK_VERSION ?= v0.8.2
FUZZTIME  ?= 60s
export CGO_ENABLED ?= 0
# bash for pipefail in the vmtest recipe (Debian always has it).
SHELL     := /bin/bash

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
	@for k in $(or $(KERNEL),$(VM_KERNELS_amd64)); do \
	  $(MAKE) -s vmrun ARCH=amd64 KERNEL=$$k CMD='heapctl demo scanout --frames 30 --png -' > out/scanout-$$k.png || exit 1; \
	  echo "out/scanout-$$k.png"; done

# The kernels (minutes each when cold, nothing when cached) build in the
# background from the start, filling the cores the lint and unit tiers
# leave idle; the VM tier waits for them. Their log: out/vmkernels.log.
.PHONY: test
test: ## every test tier: lint, unit tests (-race), the ABI on every architecture, the real-kernel VM tier, and the scanout capture PNGs in out/
	@mkdir -p out; \
	setsid $(MAKE) --no-print-directory vmkernels >out/vmkernels.log 2>&1 & kpid=$$!; \
	trap 'kill -TERM -- -$$kpid 2>/dev/null' EXIT; \
	$(MAKE) --no-print-directory lint unit abi || exit 1; \
	echo "test: waiting for the VM kernels (out/vmkernels.log)"; \
	wait $$kpid || { tail -n 60 out/vmkernels.log; echo "test: building the VM kernels failed"; exit 1; }; \
	trap - EXIT; \
	$(MAKE) --no-print-directory vmtest scanout-png

.PHONY: unit
unit: ## unit tests with the race detector (integration tests skip here with a hint)
	CGO_ENABLED=1 $(GO) test -race -count=1 $(PKGS)

# internal/uapi's pinned numbers and layouts, for every architecture heapd
# ships and i386: regenerated from the kernel headers (they must not
# change), run for arm64 and arm under qemu-user, built for 386 (neither
# this host's kernel, without IA32 emulation, nor qemu-i386, which breaks
# Go's signal handling, can run a 386 binary here).
ABI_PKGS ?= ./internal/uapi
.PHONY: abi
abi: ## check internal/uapi against the kernel headers for amd64, arm64, arm and 386 (needs gcc-aarch64-linux-gnu, gcc-arm-linux-gnueabihf, libdrm-dev, qemu-user)
	internal/uapi/testdata/abi/gen.sh --check
	CGO_ENABLED=0 GOARCH=arm64 $(GO) test -count=1 -exec qemu-aarch64 -run 'ABI|Layouts' $(ABI_PKGS)
	CGO_ENABLED=0 GOARCH=arm GOARM=7 $(GO) test -count=1 -exec qemu-arm -run 'ABI|Layouts' $(ABI_PKGS)
	CGO_ENABLED=0 GOARCH=386 $(GO) vet $(ABI_PKGS)
	CGO_ENABLED=0 GOARCH=386 $(GO) test -count=1 -c -o /dev/null $(ABI_PKGS)

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
