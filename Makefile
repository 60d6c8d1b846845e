# Front door for building, testing and installing scale (GNU make).
#
#   make deps                  install missing Debian packages (apt only when something is missing)
#                              and js/node_modules (npm ci) for the browser test when puppeteer-core is not there
#   make build                 configure and build into $(BUILD_DIR)
#   make demo                  build, then run examples/01-canonical
#   make test                  build, then run every test with ctest (the scale.js suite too, with node)
#   make test SANITIZE=address the same, built with ASan + UBSan, in build-asan
#   make test SANITIZE=thread  the same, built with TSan, in build-tsan
#   make test CXX=clang++-16   the same, built with Clang 16, in build-RelWithDebInfo-clang++-16
#   make bench                 build, run each benchmark in turn, then print every figure beside its peer
#                              (build/bench/results.json) and plot them; BENCH=<regex> runs only some
#   make fuzz                  build the libFuzzer targets (clang++-16) and run each FUZZ_SECONDS
#   make install PREFIX=/opt/scale
#   make clean
#
# Variables: BUILD_TYPE (RelWithDebInfo), JOBS (nproc), CXX (e.g. CXX=clang++-16), DEBUG_INFO (full or lines; unset, an existing tree keeps its own),
# SANITIZE (address or thread; combines with CXX), BUILD_DIR (derived from the three above);
# for fuzz: FUZZ_SECONDS (60 per target), FUZZ_CXX (clang++-16), FUZZ_BUILD_DIR (build-fuzz).
# ccache, when it is on PATH, serves as the compiler launcher (never required).

SHELL := /bin/bash

BUILD_TYPE ?= RelWithDebInfo
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
PREFIX ?= /usr/local

# GNU make defines CXX=g++ itself; pass a compiler to CMake only when the user chose one
# (command line or environment), and give each compiler and each sanitizer its own build tree
# so that `make test`, `make test CXX=clang++-16` and `make test SANITIZE=address` never share
# a CMake cache.
ifneq ($(filter command line environment override,$(origin CXX)),)
  CXX_CHOSEN := 1
endif

SANITIZE ?=
ifeq ($(SANITIZE),)
  SANITIZE_SUFFIX :=
else ifeq ($(SANITIZE),address)
  SANITIZE_SUFFIX := -asan
else ifeq ($(SANITIZE),thread)
  SANITIZE_SUFFIX := -tsan
else
  $(error SANITIZE=$(SANITIZE): use SANITIZE=address (ASan + UBSan) or SANITIZE=thread (TSan))
endif

ifdef CXX_CHOSEN
  CMAKE_CXX_ARG := -DCMAKE_CXX_COMPILER=$(firstword $(CXX))
  BUILD_DIR ?= build-$(BUILD_TYPE)-$(notdir $(firstword $(CXX)))$(SANITIZE_SUFFIX)
else ifeq ($(BUILD_TYPE),RelWithDebInfo)
  BUILD_DIR ?= build$(SANITIZE_SUFFIX)
else
  BUILD_DIR ?= build-$(BUILD_TYPE)$(SANITIZE_SUFFIX)
endif

CCACHE := $(shell command -v ccache 2>/dev/null)
ifneq ($(CCACHE),)
  CMAKE_LAUNCHER_ARG := -DCMAKE_CXX_COMPILER_LAUNCHER=$(CCACHE)
endif

DEPS_PACKAGES := g++ cmake make pkg-config \
  libboost1.81-dev libboost-program-options1.81-dev libboost-url1.81-dev \
  nlohmann-json3-dev catch2 libhiredis-dev redis-server redis-tools libtbb-dev wrk \
  libspdlog-dev libcli11-dev libboost-stacktrace1.81-dev nodejs chromium gdb
ifdef CXX_CHOSEN
  ifneq ($(findstring clang++-16,$(CXX)),)
    DEPS_PACKAGES += clang-16
    CXX_IS_CLANG16 := 1
  endif
endif
# The sanitizers' runtimes: GCC's come in their own packages (g++-12 pulls them in today, named
# here so that a missing one is installed rather than found missing at link time), Clang's in
# libclang-rt-16-dev.
ifneq ($(SANITIZE),)
  ifdef CXX_IS_CLANG16
    DEPS_PACKAGES += libclang-rt-16-dev
  else ifeq ($(SANITIZE),address)
    DEPS_PACKAGES += libasan8 libubsan1
  else
    DEPS_PACKAGES += libtsan2
  endif
endif

FUZZ_SECONDS ?= 60
FUZZ_CXX ?= clang++-16
FUZZ_BUILD_DIR ?= build-fuzz
# libFuzzer and the sanitizers' runtimes come with libclang-rt-16-dev.
ifneq ($(filter fuzz,$(MAKECMDGOALS)),)
  DEPS_PACKAGES += clang-16 libclang-rt-16-dev
endif

# DEBUG_INFO=lines compiles with line tables only (-g1): stacks keep names and lines, compiling
# takes a third less time (CI uses it); full keeps what a debugger needs.
# Unset, it keeps what an existing build tree was configured with (so `make bench` on a tree built
# with DEBUG_INFO=lines does not rebuild it whole), and is full for a new tree.
ifeq ($(origin DEBUG_INFO),undefined)
  ifeq ($(shell sed -n 's/^SCALE_LINE_TABLES_ONLY:[A-Z]*=//p' $(BUILD_DIR)/CMakeCache.txt 2>/dev/null),ON)
    DEBUG_INFO := lines
  else
    DEBUG_INFO := full
  endif
endif
ifeq ($(DEBUG_INFO),full)
  LINE_TABLES_ONLY := OFF
else ifeq ($(DEBUG_INFO),lines)
  LINE_TABLES_ONLY := ON
else
  $(error DEBUG_INFO=$(DEBUG_INFO): use DEBUG_INFO=full (the default for a new build tree) or DEBUG_INFO=lines (-g1))
endif

CMAKE_CONFIGURE_ARGS := -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) -DCMAKE_EXPORT_COMPILE_COMMANDS=ON $(CMAKE_CXX_ARG) \
  -DSCALE_SANITIZE=$(SANITIZE) -DSCALE_LINE_TABLES_ONLY=$(LINE_TABLES_ONLY) $(CMAKE_LAUNCHER_ARG)
# A sanitizer build's timings mean nothing, so it leaves the benchmarks out (`make bench
# SANITIZE=...` still builds them).
ifneq ($(SANITIZE),)
  CMAKE_CONFIGURE_ARGS += -DSCALE_BUILD_BENCHES=OFF
endif

.PHONY: all deps configure build demo test bench fuzz install clean

all: build

deps:
	@if ! command -v dpkg-query >/dev/null 2>&1; then \
	  echo "deps: dpkg-query not found (not Debian?); install these yourself: $(DEPS_PACKAGES)" >&2; \
	else \
	  missing=""; \
	  for pkg in $(DEPS_PACKAGES); do \
	    case "$$(dpkg-query -W -f='$${Status}' "$$pkg" 2>/dev/null)" in \
	      *" ok installed") ;; \
	      *) missing="$$missing $$pkg" ;; \
	    esac; \
	  done; \
	  if ! command -v npm >/dev/null 2>&1; then missing="$$missing npm"; fi; \
	  if [ -n "$$missing" ]; then \
	    sudo=""; \
	    if [ "$$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo=sudo; fi; \
	    echo "deps: installing$$missing" >&2; \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update && \
	    $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing || exit 1; \
	  fi; \
	fi
	@# puppeteer-core (pinned in js/package-lock.json) drives the system chromium in the browser
	@# test; it never downloads a browser (PUPPETEER_SKIP_DOWNLOAD says so to any that would).
	@# npm is Debian's package only where no npm came with node (NodeSource's nodejs has its own).
	@if [ ! -f js/node_modules/puppeteer-core/package.json ]; then \
	  echo "deps: npm ci in js/ (puppeteer-core for ui_browser_test)" >&2; \
	  (cd js && PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund); \
	fi

# NOTE: the compiler is checked first: CMake run without it fails, and the cache it leaves behind
# records no executable format, so that tree would later install its programs by relinking
# (and `package_install` fails). `make test` and `make demo` install it; `make build` does not.
configure:
	@command -v $(firstword $(CXX)) >/dev/null 2>&1 || { \
	  echo "configure: the compiler $(firstword $(CXX)) is not installed; run 'make deps CXX=$(firstword $(CXX))' first (make test and make demo install it themselves)" >&2; \
	  exit 1; }
	cmake -S . -B $(BUILD_DIR) $(CMAKE_CONFIGURE_ARGS)

build: configure
	cmake --build $(BUILD_DIR) -j $(JOBS)

demo: deps
	@$(MAKE) --no-print-directory build
	@echo "==> running $(BUILD_DIR)/examples/01-canonical (the canonical program)"
	$(BUILD_DIR)/examples/01-canonical
	@echo "==> 01-canonical exited 0: every assert held"

test: deps
	@$(MAKE) --no-print-directory build
	ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS) --timeout 300

# The benchmarks' peers and their page: Python's multiprocessing (the process pool's peer) and
# gnuplot (bench/plot.sh). A target-specific variable, so `make deps` for the tests stays as it is.
bench: DEPS_PACKAGES += python3 gnuplot-nox
# Each program records its rows in $(BUILD_DIR)/bench/results.json (bench/support/results.hpp),
# started afresh each run; then one table of every figure (bench/summary.mjs) and the plots
# (bench/plot.sh) for docs/performance.md. BENCH=<regex> runs only the programs whose names match.
bench: deps
	@$(MAKE) --no-print-directory build CMAKE_CONFIGURE_ARGS="$(CMAKE_CONFIGURE_ARGS) -DSCALE_BUILD_BENCHES=ON"
	@set -e; found=0; rm -f $(BUILD_DIR)/bench/results.json; \
	export SCALE_BENCH_COMMIT="$$(git rev-parse --short HEAD 2>/dev/null)$$(git diff --quiet HEAD 2>/dev/null || echo +changes)"; \
	for exe in $(BUILD_DIR)/bench/*; do \
	  if [ -f "$$exe" ] && [ -x "$$exe" ] && [[ "$$(basename "$$exe")" =~ $(or $(BENCH),.) ]]; then \
	    found=1; echo "==> $$exe"; "$$exe"; \
	  fi; \
	done; \
	if [ "$$found" = 0 ]; then echo "bench: no benchmarks in $(BUILD_DIR)/bench"; exit 1; fi; \
	echo "==> every figure, beside its peer's from the same run ($(BUILD_DIR)/bench/results.json)"; \
	node bench/summary.mjs $(BUILD_DIR)/bench/results.json; \
	bench/plot.sh $(BUILD_DIR)/bench/results.json

# Each fuzz/<name>.cpp runs for FUZZ_SECONDS from its seed corpus fuzz/corpus/<name>/; new inputs
# go to $(FUZZ_BUILD_DIR)/fuzz-corpus/<name>/ (the checked-in corpus is only read) and a crash,
# leak or timeout stops with the input's path (add it to the corpus once fixed).
fuzz: deps
	cmake -S . -B $(FUZZ_BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=$(FUZZ_CXX) \
	  -DSCALE_FUZZ=ON -DSCALE_BUILD_TESTS=OFF -DSCALE_BUILD_EXAMPLES=OFF -DSCALE_BUILD_BENCHES=OFF \
	  -DSCALE_INSTALL=OFF $(FUZZ_CMAKE_ARGS)
	cmake --build $(FUZZ_BUILD_DIR) -j $(JOBS) --target scale_fuzz
	@set -e; found=0; \
	for source in fuzz/*.cpp; do \
	  name=$$(basename "$$source" .cpp); \
	  if [ "$$name" = replay_main ]; then continue; fi; \
	  found=1; exe="$(FUZZ_BUILD_DIR)/fuzz/$$name"; \
	  scratch="$(FUZZ_BUILD_DIR)/fuzz-corpus/$$name"; artifacts="$(FUZZ_BUILD_DIR)/fuzz-artifacts/$$name"; \
	  mkdir -p "$$scratch" "$$artifacts"; \
	  dict=""; if [ -f "fuzz/$$name.dict" ]; then dict="-dict=fuzz/$$name.dict"; fi; \
	  echo "==> fuzzing $$name for $(FUZZ_SECONDS)s (new inputs: $$scratch)"; \
	  if ! "$$exe" -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 -max_len=12288 \
	      -print_final_stats=1 -artifact_prefix="$$artifacts/" $$dict "$$scratch" "fuzz/corpus/$$name" \
	      > "$(FUZZ_BUILD_DIR)/fuzz-$$name.log" 2>&1; then \
	    tail -n 60 "$(FUZZ_BUILD_DIR)/fuzz-$$name.log"; \
	    echo "fuzz: $$name failed; the input that did it:" >&2; \
	    ls -1t "$$artifacts"/* 2>/dev/null | head -n 1 >&2; \
	    echo "reproduce: $$exe <that file>; log: $(FUZZ_BUILD_DIR)/fuzz-$$name.log" >&2; \
	    exit 1; \
	  fi; \
	  grep -E '^stat::number_of_executed_units|^Done' "$(FUZZ_BUILD_DIR)/fuzz-$$name.log" || true; \
	done; \
	if [ "$$found" = 0 ]; then echo "fuzz: no targets in fuzz/"; fi

install: deps
	@$(MAKE) --no-print-directory build
	cmake --install $(BUILD_DIR) --prefix $(PREFIX)

clean:
	rm -rf -- $(BUILD_DIR) build build-*/
