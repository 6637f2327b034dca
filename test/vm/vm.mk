# The VM test tier (docs/testing.md): included by the top-level Makefile.
#
#   make vmkernels                       build (or find cached) every kernel
#   make vmtest                          all tests on every kernel in VM_KERNELS
#   make vmtest KERNEL=6.1 PKG=./dmabuf RUN=TestIntegrationAlloc
#   make vmrun KERNEL=6.1 CMD='heapctl heaps -o json'
#
# Kernels are cached in $(HEAPD_VM_CACHE) (default ~/.cache/heapd-vm).

VM_DIR          ?= test/vm
VM_KERNELS      ?= 6.1 6.12
VM_ARCH         ?= x86_64
VM_TIMEOUT      ?= 10m
VM_TEST_TIMEOUT ?= 5m
# More vmrunner flags, e.g. VMFLAGS='-keep -append drm.debug=0x1'.
VMFLAGS         ?=
VM_RUNNER       ?= $(VM_DIR)/.bin/vmrunner

# Per-invocation selections (empty: everything / the first kernel for vmrun).
KERNEL ?=
PKG    ?=
RUN    ?=
CMD    ?=

.PHONY: vmkernels vmtest vmrun vmrunner

vmrunner:
	@go build -o $(VM_RUNNER) ./$(VM_DIR)/cmd/vmrunner

vmkernels: ## build (or find cached) the VM tier's kernels (KERNEL=6.1 for one)
	@for v in $(or $(KERNEL),$(VM_KERNELS)); do \
		HEAPD_VM_ARCH=$(VM_ARCH) $(VM_DIR)/build-kernel.sh $$v || exit 1; \
	done

# User-supplied strings reach vmrunner through the environment, so no
# quoting of regexes or command lines can break the recipe.
vmtest: export HEAPD_VM_RUN := $(RUN)
vmtest vmrun: export HEAPD_VM_PKG := $(PKG)
vmrun: export HEAPD_VM_CMD := $(CMD)

vmtest: vmrunner ## real-kernel tests in QEMU (KERNEL=6.1|6.12, PKG=./dmabuf, RUN=TestX)
	$(VM_RUNNER) test -arch $(VM_ARCH) -kernel "$(or $(KERNEL),$(VM_KERNELS))" \
		-timeout $(VM_TIMEOUT) -test-timeout $(VM_TEST_TIMEOUT) \
		-run "$$HEAPD_VM_RUN" -pkg "$$HEAPD_VM_PKG" $(VMFLAGS)

vmrun: vmrunner ## run one command in the VM: make vmrun KERNEL=6.1 CMD='heapctl heaps'
	@test -n "$$HEAPD_VM_CMD" || { echo "usage: make vmrun [KERNEL=6.1] CMD='heapctl heaps'" >&2; exit 2; }
	@$(VM_RUNNER) run -arch $(VM_ARCH) -kernel "$(or $(KERNEL),$(firstword $(VM_KERNELS)))" \
		-timeout $(VM_TIMEOUT) -pkg "$$HEAPD_VM_PKG" -cmd "$$HEAPD_VM_CMD" $(VMFLAGS)
