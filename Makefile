# keyplane: every entry point a developer or CI needs. Each target creates the virtual
# environment on first use, so a fresh clone needs nothing but Python 3.11+, a C
# compiler and OpenSSL 3 headers.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
ASAN_VENV := .venv-asan
ASAN_STAMP := $(ASAN_VENV)/.installed
NATIVE_SOURCES := $(wildcard native/src/*.c native/src/*.h native/include/*.h native/ffi/*.cdef native/build_ffi.py)

# numpy's OpenBLAS threads busy-wait beside the benchmarks; keyplane never uses BLAS.
export OPENBLAS_NUM_THREADS ?= 1

.PHONY: help install serve test test-unit native-asan crash-test soak fuzz bench-native bench-http bench-micro bench-fairness bench lint clean

help:
	@echo "make serve         run the server on 127.0.0.1:4599, data under ./.keyplane"
	@echo "make test          build everything and run every test"
	@echo "make native-asan   run the native tests under AddressSanitizer + UBSan"
	@echo "make crash-test    kill the server 1,000 times mid-request; nothing acknowledged may be lost"
	@echo "make soak          10 minutes at 80% of capacity: no errors, bounded RSS, steady p99"
	@echo "make fuzz          the fuzz targets at 20,000 examples each (about 25 minutes)"
	@echo "make bench-native  the native HSM throughput table"
	@echo "make bench-http    requests/s and latency over HTTP, against moto"
	@echo "make bench-micro   pytest-benchmark timings of single calls (policy, SigV4, native, quota)"
	@echo "make bench-fairness one account floods, another's latency is measured"
	@echo "make lint          ruff and mypy"

$(PY):
	$(PYTHON) -m venv $(VENV)

# The build needs setuptools and cffi in the environment because the package is
# installed without build isolation: editable, so src/ changes apply without a rebuild.
$(STAMP): $(PY) pyproject.toml setup.py $(NATIVE_SOURCES)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet "setuptools>=69" "cffi>=1.17,<3" wheel
	$(PIP) install --quiet --no-build-isolation -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

serve: $(STAMP)
	$(VENV)/bin/keyplane serve $(SERVE_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q

test-unit: $(STAMP)
	$(PY) -m pytest -q tests/unit tests/vectors

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench native
	$(VENV)/bin/mypy

# The native module rebuilt with AddressSanitizer and UndefinedBehaviorSanitizer in its
# own environment, then the native tests and vectors under it. Python itself is not
# instrumented, so the ASan runtime is preloaded and leak checking (which would report
# the interpreter's own allocations) is off; UBSan findings abort the run.
$(ASAN_STAMP): $(NATIVE_SOURCES) pyproject.toml setup.py
	$(PYTHON) -m venv $(ASAN_VENV)
	$(ASAN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(ASAN_VENV)/bin/python -m pip install --quiet "setuptools>=69" "cffi>=1.17,<3" wheel
	KEYPLANE_SANITIZE=address,undefined $(ASAN_VENV)/bin/python -m pip install --quiet \
		--no-build-isolation --force-reinstall --no-cache-dir ".[native-test]"
	touch $(ASAN_STAMP)

native-asan: $(ASAN_STAMP)
	@# Refuse to report a clean run of a module that was not instrumented.
	objdump -p $$(find $(ASAN_VENV)/lib -name '_kp*.so') | grep -q 'NEEDED.*libasan' \
		|| { echo "native-asan: the installed module is not built with ASan"; exit 1; }
	cd tests && LD_PRELOAD="$$(gcc -print-file-name=libasan.so)" \
		ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		../$(ASAN_VENV)/bin/python -m pytest -q -p no:cacheprovider \
		-o addopts="" -o filterwarnings="" unit/native unit/hsm vectors

# CRASH_ARGS="--cycles N --seed S" replays or shortens a run; make test runs 50 cycles.
crash-test: $(STAMP)
	$(PY) -m tests.crash.harness $(CRASH_ARGS)

# SOAK_ARGS="--minutes N" for a shorter or longer soak; make test runs 30 seconds.
soak: $(STAMP)
	$(PY) -m tests.soak.soak $(SOAK_ARGS)

# make test runs every fuzz target briefly; this runs them long. FUZZ_EXAMPLES=200000
# takes hours.
FUZZ_EXAMPLES ?= 20000
fuzz: $(STAMP)
	KEYPLANE_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q -p no:cacheprovider tests/fuzz

bench-native: $(STAMP)
	$(PY) bench/native.py

bench-http: $(STAMP)
	$(PY) bench/http.py $(BENCH_ARGS)

bench-micro: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider --benchmark-enable bench/test_bench_policy.py \
		bench/test_bench_sigv4.py bench/test_bench_native.py bench/test_bench_quota.py

# FAIRNESS_ARGS="--rounds N --duration S --loads ... --baseline OTHER/src" (see bench/README.md).
bench-fairness: $(STAMP)
	$(PY) bench/fairness.py $(FAIRNESS_ARGS)

bench: bench-native bench-http bench-micro

clean:
	rm -rf $(VENV) $(ASAN_VENV) build dist src/*.egg-info src/keyplane/native/_kp*.so
