# Entry points used by the README and .ci/run. Everything installs on first use (see venv below).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
FERRETDB := tools/bin/ferretdb
PORT ?= 9013

.PHONY: help venv ferretdb helm run test lint format fuzz fuzz-nightly loadtest demo bench bench-full bench-fl bench-sdk bench-store clean

help:
	@echo "make run     - the API on http://127.0.0.1:$(PORT)/docs with an embedded FerretDB (SQLite) store"
	@echo "make test    - the test suite against a real MongoDB wire-protocol server"
	@echo "make lint    - ruff check and format check"
	@echo "make demo    - federated training end to end (collector + 3 local executions)"
	@echo "make fuzz    - schemathesis against the OpenAPI document (SEED=, EXAMPLES=)"

# Dependencies live in one virtualenv per dependency set, shared by every checkout on this
# machine and named by a hash of pyproject.toml's dependency lists and the Python (tools/deps_key.py):
# CI's fresh clones reuse it (torch alone is ~5 GB and 75 s), a change of dependencies builds a new
# one. .venv is this checkout's own: the project, editable, over the shared packages (a .pth file).
DEPS_KEY := $(shell $(PYTHON) tools/deps_key.py)
DEPS_HOME ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/flrepo
DEPS_VENV := $(DEPS_HOME)/deps-$(DEPS_KEY)

# No prerequisites: the name says which dependencies it holds. flock: two runs never build it at once.
$(DEPS_VENV)/.complete:
	mkdir -p $(DEPS_HOME)
	flock $(DEPS_HOME)/.lock sh -c 'test -f $@ || { \
	  rm -rf $(DEPS_VENV) && $(PYTHON) -m venv $(DEPS_VENV) \
	  && $(DEPS_VENV)/bin/python -m pip install --upgrade pip \
	  && $(DEPS_VENV)/bin/python -m pip install ".[test]" \
	  && $(DEPS_VENV)/bin/python -m pip uninstall --yes flrepo \
	  && touch $@; }'

$(VENV)/.installed: pyproject.toml $(DEPS_VENV)/.complete
	rm -rf $(VENV)
	$(PYTHON) -m venv --without-pip $(VENV)  # pip and setuptools come from the shared packages too
	$(DEPS_VENV)/bin/python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])" \
	  > "$$($(PY) -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/_flrepo_deps.pth"
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

venv: $(VENV)/.installed

# FerretDB v1.24.2 embedded in a tiny Go program (DESIGN.md §3), built from a vendored copy with
# tools/ferretdb/pushdown.patch applied (tools/ferretdb/README.md). build.sh tries the local Go
# first, then the toolchain FerretDB was released with, fetched through the Go module proxy.
FERRETDB_SRC := tools/ferretdb/main.go tools/ferretdb/go.mod tools/ferretdb/go.sum tools/ferretdb/build.sh
$(FERRETDB): $(FERRETDB_SRC) tools/ferretdb/pushdown.patch
	tools/ferretdb/build.sh

ferretdb: $(FERRETDB)

# The same program with FerretDB as released (no patch): the "before" column of bench-store.
FERRETDB_UNPATCHED := tools/bin/ferretdb-unpatched
$(FERRETDB_UNPATCHED): $(FERRETDB_SRC)
	tools/ferretdb/build.sh --unpatched

# helm v3 built from the Go module proxy (no registry here ships it); used by the chart tests.
HELM := tools/bin/helm
$(HELM): tools/install_helm.sh
	tools/install_helm.sh

helm: $(HELM)

# Development server: anonymous, local data in .flrepo-data/, Swagger UI at /docs.
run: venv ferretdb
	$(VENV)/bin/flrepo serve --embedded --host 127.0.0.1 --port $(PORT)

test: venv ferretdb helm
	$(PY) -m pytest -q $(PYTEST_ARGS)

# Property-based fuzzing of every operation with schemathesis (seed and case count are printed).
fuzz: venv ferretdb
	$(PY) tools/fuzz.py --examples $(or $(EXAMPLES),25) $(if $(SEED),--seed $(SEED))

fuzz-nightly: venv ferretdb
	$(PY) tools/fuzz.py --examples 500 $(if $(SEED),--seed $(SEED))

# Federated learning end to end on the embedded store.
demo: venv ferretdb
	$(VENV)/bin/flrepo demo

# Benchmarks: quick mode (CI: they still run) and full mode (the figures, appended to RESULTS.md).
bench: venv ferretdb
	$(PY) bench/bench.py --mode quick

bench-full: venv ferretdb
	$(PY) bench/bench.py --mode full --out bench/RESULTS.md

# The embedded store's latency as it fills (0/200/1024 MiB, 10/5,000 models): FerretDB as released
# ("before") beside the patched build ("after"). Takes ~25 min; ARGS= e.g. "--out bench/RESULTS.md".
bench-store: venv ferretdb $(FERRETDB_UNPATCHED)
	$(PY) bench/store.py --ferretdb-bin before=$(FERRETDB_UNPATCHED) --ferretdb-bin after=$(FERRETDB) $(ARGS)

# The SDK's transfer rate against plain httpx streaming (MIB= file size).
bench-fl: venv ferretdb
	$(PY) bench/federated.py --repeats $(or $(REPEATS),3) $(if $(OUT),--out $(OUT))

bench-sdk: venv ferretdb
	$(PY) bench/sdk.py --mib $(or $(MIB),64)

# Bounded load test on loopback: 16 clients for 60 s, then every surviving file is verified.
loadtest: venv ferretdb helm
	$(PY) bench/loadtest.py --clients $(or $(CLIENTS),16) --seconds $(or $(SECONDS),60)

lint: venv
	$(PY) -m ruff check app tests tools bench
	$(PY) -m ruff format --check app tests tools bench
	$(PY) -m mypy app/flrepo

format: venv
	$(PY) -m ruff check --fix app tests
	$(PY) -m ruff format app tests

clean:
	rm -rf $(VENV) tools/bin tools/ferretdb/vendor .flrepo-data .pytest_cache
