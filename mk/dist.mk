# Release builds: included by the top-level Makefile.
#
#   make dist                          every binary for every platform, in ./dist
#   make dist DIST_PLATFORMS=linux/arm64   just the Raspberry Pi 4/5 build
#   make dist VERSION=v0.2.0           stamp another version than git describe
#
# Each binary is static (CGO_ENABLED=0: no libc, so one file runs on Debian,
# Fedora, Alpine and in a scratch container alike), built with -trimpath (no
# path of the build machine in it) and stamped with VERSION, which
# `heapd --version` prints. dist/ also gets one tarball per platform
# (binaries, contrib/ files, docs) and SHA256SUMS over everything.
#
# `make vmtest` builds the heapd and heapctl it boots with these same flags
# (test/vm/vm.mk's VM_BUILDFLAGS) and logs their SHA-256: for one commit
# they equal dist's binaries byte for byte (checked for linux/amd64 and
# linux/arm/7), so what the VM tier tested on each architecture is what
# ships.

GO             ?= go
DIST           ?= dist
DIST_CMDS      ?= heapd heapctl
# os/arch[/arm version]: linux/arm/7 is GOARM=7 (Raspberry Pi 2 and later
# running a 32-bit OS); linux/arm64 is what a Raspberry Pi 4 or 5 with a
# 64-bit OS runs.
DIST_PLATFORMS ?= linux/amd64 linux/arm64 linux/arm/7
# Computed once per make run (a commit landing mid-build must not change it).
ifeq ($(origin VERSION),undefined)
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo unknown)
endif
# Timestamps inside the tarballs: the commit's time, so that two builds of
# one commit give the same bytes.
ifeq ($(origin SOURCE_DATE_EPOCH),undefined)
SOURCE_DATE_EPOCH := $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
endif
# main.buildVersion is the link-time version variable of each command.
DIST_LDFLAGS   ?= -s -w -buildid= -X main.buildVersion=$(VERSION)
# What goes into each tarball besides the binaries.
DIST_FILES     ?= README.md docs contrib/systemd contrib/openrc contrib/udev contrib/heapd.toml

.PHONY: dist
dist: ## static release binaries for linux/amd64, arm64 and arm (GOARM=7) in ./dist, tarballs and SHA256SUMS; VERSION=git describe
	@set -e; \
	rm -rf $(DIST); mkdir -p $(DIST); \
	for p in $(DIST_PLATFORMS); do \
	  os=$${p%%/*}; rest=$${p#*/}; arch=$${rest%%/*}; arm=; suffix=$$arch; \
	  case $$rest in */*) arm=$${rest#*/}; suffix=$${arch}v$$arm;; esac; \
	  plat=$$os-$$suffix; stage=$(DIST)/heapd-$(VERSION)-$$plat; \
	  mkdir -p $$stage; \
	  for c in $(DIST_CMDS); do \
	    echo "  GO $$c $$plat ($(VERSION))"; \
	    CGO_ENABLED=0 GOOS=$$os GOARCH=$$arch GOARM=$$arm \
	      $(GO) build -trimpath -ldflags '$(DIST_LDFLAGS)' -o $(DIST)/$$c-$$plat ./cmd/$$c; \
	    cp $(DIST)/$$c-$$plat $$stage/$$c; \
	  done; \
	  for f in $(DIST_FILES); do \
	    if [ -e $$f ]; then mkdir -p $$stage/$$(dirname $$f); cp -R $$f $$stage/$$f; fi; \
	  done; \
	  find $$stage -name '*.go' -delete; \
	  tar --sort=name --mtime=@$(SOURCE_DATE_EPOCH) --owner=0 --group=0 --numeric-owner \
	    -C $(DIST) -cf - heapd-$(VERSION)-$$plat | gzip -n -9 > $$stage.tar.gz; \
	  rm -rf $$stage; \
	done; \
	cd $(DIST) && sha256sum -- * > SHA256SUMS; \
	echo "  dist/: $$(ls | grep -vc SHA256SUMS) files, checksums in dist/SHA256SUMS"

.PHONY: dist-check
dist-check: dist ## make dist, then check every binary is static, stamped with VERSION and matches SHA256SUMS
	@set -e; cd $(DIST); sha256sum -c --quiet SHA256SUMS; \
	for f in $$(ls | grep -v -e SHA256SUMS -e '\.tar\.gz$$'); do \
	  $(GO) version -m $$f | grep -q 'CGO_ENABLED=0' || { echo "$$f: not built with CGO_ENABLED=0"; exit 1; }; \
	  $(GO) version -m $$f | grep -q -- '-trimpath=true' || { echo "$$f: not built with -trimpath"; exit 1; }; \
	  grep -a -q -F -- '$(VERSION)' $$f || { echo "$$f: $(VERSION) is not in it: does cmd/$${f%%-*} have a main.buildVersion variable?"; exit 1; }; \
	  if command -v file >/dev/null; then file $$f | grep -q 'statically linked' || { echo "$$f: not static"; file $$f; exit 1; }; fi; \
	done; \
	native=$$($(GO) env GOOS)-$$($(GO) env GOARCH); \
	for c in $(DIST_CMDS); do \
	  if [ -x $$c-$$native ]; then \
	    ./$$c-$$native --version | grep -q -F -- '$(VERSION)' || { echo "$$c-$$native --version does not print $(VERSION)"; exit 1; }; \
	  fi; \
	done; \
	echo "  dist/: every binary static, -trimpath, stamped $(VERSION); checksums match"
