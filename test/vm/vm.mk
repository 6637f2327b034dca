# The VM test tier (docs/testing.md): included by the top-level Makefile.
#
#   make vmkernels                       build (or find cached) every kernel
#   make vmtest                          every architecture on its kernels
#   make vmtest ARCH=arm64               one architecture
#   make vmtest ARCH=amd64 KERNEL=6.1 PKG=./dmabuf RUN=TestIntegrationAlloc
#   make vmrun ARCH=arm KERNEL=6.1 CMD='heapctl heaps -o json'
#
# ARCH is a guest configuration: amd64, arm64, arm (32-bit kernel and
# userland) or arm-on-arm64 (armhf binaries on the arm64 kernel: Raspberry
# Pi OS 32-bit on a Pi 4/5). Kernels are cached in $(HEAPD_VM_CACHE)
# (default ~/.cache/heapd-vm).

VM_DIR          ?= test/vm
VM_ARCHES       ?= amd64 arm64 arm arm-on-arm64
# The kernels each architecture boots: every one on 6.1, amd64 on 6.12 too.
VM_KERNELS_amd64        ?= 6.1 6.12
VM_KERNELS_arm64        ?= 6.1
VM_KERNELS_arm          ?= 6.1
VM_KERNELS_arm-on-arm64 ?= 6.1
# build-kernel.sh's name of each architecture's kernel.
VM_KARCH_amd64          := x86_64
VM_KARCH_arm64          := arm64
VM_KARCH_arm            := arm
VM_KARCH_arm-on-arm64   := arm64
# A guest that has not finished by then is killed (a hang); 32-bit arm
# under TCG needs about 8 minutes for the whole suite.
VM_TIMEOUT      ?= 15m
VM_TEST_TIMEOUT ?= 5m
# More vmrunner flags, e.g. VMFLAGS='-keep -append drm.debug=0x1'.
VMFLAGS         ?=
VM_RUNNER       ?= $(VM_DIR)/.bin/vmrunner
# heapd and heapctl in the guest are built as `make dist` builds them
# (mk/dist.mk): the binaries tested are the ones released.
VM_BUILDFLAGS    = -trimpath -ldflags='$(DIST_LDFLAGS)'

# Per-invocation selections (empty: every architecture / its kernels /
# everything; vmrun: amd64 and its first kernel).
ARCH   ?=
KERNEL ?=
PKG    ?=
RUN    ?=
CMD    ?=

vm_kernels = $(or $(KERNEL),$(VM_KERNELS_$(1)))

.PHONY: vmkernels vmtest vmrun vmrunner

vmrunner:
	@go build -o $(VM_RUNNER) ./$(VM_DIR)/cmd/vmrunner

# One target per kernel (arm64 and arm-on-arm64 share theirs), built two at
# a time: a kernel build leaves a core idle while it configures and links.
vm_kernel_targets = $(sort $(foreach a,$(or $(ARCH),$(VM_ARCHES)),$(foreach v,$(call vm_kernels,$(a)),vmkernel-$(VM_KARCH_$(a))-$(v))))

vmkernels: ## build (or find cached) the VM tier's kernels, two at a time (ARCH=arm64, KERNEL=6.1 for fewer)
	$(if $(filter-out $(VM_ARCHES),$(ARCH)),$(error unknown ARCH=$(ARCH): want one of $(VM_ARCHES)))
	@$(MAKE) --no-print-directory -j2 $(vm_kernel_targets)

.PHONY: vmkernel-%
vmkernel-%:
	@HEAPD_VM_ARCH=$(word 1,$(subst -, ,$*)) $(VM_DIR)/build-kernel.sh $(word 2,$(subst -, ,$*)) >/dev/null

# User-supplied strings reach vmrunner through the environment, so no
# quoting of regexes or command lines can break the recipe.
vmtest: export HEAPD_VM_RUN := $(RUN)
vmtest vmrun: export HEAPD_VM_PKG := $(PKG)
vmrun: export HEAPD_VM_CMD := $(CMD)
vmtest vmrun: export HEAPD_VM_BUILDFLAGS = $(VM_BUILDFLAGS)

# One vmrunner run boots every architecture's guests, two at a time (each
# QEMU keeps one core busy) while it builds the next architecture's
# binaries; every architecture runs even when one fails, so one run
# reports them all. The output is also kept in test/vm/.bin/vmtest.log.
vm_matrix = $(foreach a,$(or $(ARCH),$(VM_ARCHES)),$(a)=$(subst $(space),$(comma),$(strip $(call vm_kernels,$(a)))))
empty :=
space := $(empty) $(empty)
comma := ,

vmtest: vmrunner ## real-kernel tests in QEMU (ARCH=amd64|arm64|arm|arm-on-arm64, KERNEL=6.1|6.12, PKG=./dmabuf, RUN=TestX)
	$(if $(filter-out $(VM_ARCHES),$(ARCH)),$(error unknown ARCH=$(ARCH): want one of $(VM_ARCHES)))
	@set -o pipefail; $(VM_RUNNER) test -matrix "$(vm_matrix)" \
		-timeout $(VM_TIMEOUT) -test-timeout $(VM_TEST_TIMEOUT) \
		-run "$$HEAPD_VM_RUN" -pkg "$$HEAPD_VM_PKG" -buildflags "$$HEAPD_VM_BUILDFLAGS" $(VMFLAGS) \
		2>&1 | tee $(VM_DIR)/.bin/vmtest.log

vmrun: vmrunner ## run one command in the VM: make vmrun ARCH=arm64 KERNEL=6.1 CMD='heapctl heaps'
	@test -n "$$HEAPD_VM_CMD" || { echo "usage: make vmrun [ARCH=amd64] [KERNEL=6.1] CMD='heapctl heaps'" >&2; exit 2; }
	@$(VM_RUNNER) run -arch $(or $(ARCH),amd64) -kernel "$(or $(KERNEL),$(firstword $(VM_KERNELS_$(or $(ARCH),amd64))))" \
		-timeout $(VM_TIMEOUT) -pkg "$$HEAPD_VM_PKG" -cmd "$$HEAPD_VM_CMD" -buildflags "$$HEAPD_VM_BUILDFLAGS" $(VMFLAGS)
