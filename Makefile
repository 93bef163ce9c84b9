# Everything runs inside .venv, created on first use from pyproject.toml + constraints.txt.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-unit lint typecheck pytest demo demo-ui bench bench-quick constraints clean \
	test-compat constraints-compat dist distributed-deps test-distributed browser-deps test-ui \
	screenshots

# Suites with needs of their own, each behind its own target (which installs what it needs):
# tests/e2e/distributed (PostgreSQL, Redis, Celery: make test-distributed) and tests/e2e/browser
# (Chromium: make test-ui).
SEPARATE_SUITES := --ignore=tests/e2e/distributed --ignore=tests/e2e/browser

# Install the Debian packages $(2) unless the shell test $(1) passes (through sudo unless root).
define apt_install_unless
	@if ! { $(1); } >/dev/null 2>&1; then \
	  sudo=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  set -x; \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get update && \
	  $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y $(2); \
	fi
endef

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict flux_provider devtools tests

pytest: $(STAMP)
	$(BIN)/python -m pytest $(SEPARATE_SUITES)

test: lint typecheck pytest

# The unit tests alone (tests/unit: no server, no Airflow database): seconds.
test-unit: $(STAMP)
	$(BIN)/python -m pytest -m unit $(SEPARATE_SUITES)

demo: $(STAMP)
	$(BIN)/python -m devtools.demo

# Airflow's UI over the demo's database, on 127.0.0.1:8080: the FLUX images tab of its run.
demo-ui: $(STAMP)
	$(BIN)/python -m devtools.demo_ui

# B5 and B6 run a distributed Airflow: the full run needs what make test-distributed needs.
bench: distributed-deps
	$(BIN)/python -m benchmarks.run

bench-quick: $(STAMP)
	$(BIN)/python -m benchmarks.run --quick

# The sdist and the wheel built from it, checked as a package index reads them.
dist: $(STAMP)
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# What devtools.distributed needs: Debian's PostgreSQL and Redis servers (installed
# only when missing) and the "distributed" extra.
distributed-deps: $(STAMP)
	$(call apt_install_unless,ls /usr/lib/postgresql/*/bin/initdb && command -v redis-server,\
	  postgresql redis-server)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,distributed]"

# The scenarios on PostgreSQL, Celery and two triggerers (docs/scale.md): D1-D9.
# DISTRIBUTED_TESTS picks some (CI: "-k 'd1 or d2'"); FLUX_D1_COUNT sizes D1's batch.
DISTRIBUTED_TESTS ?=
test-distributed: distributed-deps
	$(BIN)/python -m pytest tests/e2e/distributed $(DISTRIBUTED_TESTS)

# What the browser tests need: Debian's Chromium (Playwright drives it; it downloads no browser).
browser-deps: $(STAMP)
	$(call apt_install_unless,test -x /usr/bin/chromium,chromium)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev,browser]"

test-ui: browser-deps
	$(BIN)/python -m pytest tests/e2e/browser

# The README's screenshots, taken by the browser tests.
screenshots: browser-deps
	FLUX_SCREENSHOT_DIR=$(CURDIR)/docs/images $(BIN)/python -m pytest tests/e2e/browser

constraints: $(STAMP)
	{ echo "# Pinned versions for a reproducible environment: make uses them through pip's -c flag."; \
	  echo "# Regenerate with: make constraints"; \
	  $(BIN)/python -m pip freeze --exclude-editable | grep -v '^airflow-provider-flux'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt

clean:
	rm -rf $(VENV) .venv-compat .mypy_cache .ruff_cache output .airflow dist

# --- Compatibility matrix ------------------------------------------------------------------
# One venv per cell under .venv-compat/<cell>, pinned by constraints/<cell>.txt. A cell is an
# Airflow line on one Python: af31-py310 = Airflow 3.1 on Python 3.10. Run one or some with
# CELLS="af31-py310 af32-py312". COMPAT_TESTS are the suites that run Airflow.
COMPAT_CELLS := af31-py310 af32-py312 af33-py313
CELLS ?= $(COMPAT_CELLS)
COMPAT_VENVS := .venv-compat
COMPAT_TESTS ?= tests/integration/airflow tests/integration/faults tests/integration/plugins \
	tests/e2e/standalone tests/e2e/pytest_plugin tests/system
COMPAT_PYTEST_ARGS ?=

# The Airflow release each cell resolves against (make constraints-compat); 3.3 follows
# constraints.txt.
AIRFLOW_af31-py310 := 3.1.8
AIRFLOW_af32-py312 := 3.2.2
AIRFLOW_af33-py313 = $(shell sed -n 's/^apache-airflow==//p' constraints.txt)
# Extra requirements for resolving a cell, where the newest release of a dependency breaks that
# Airflow itself (the cell would fail with or without this provider):
# - 3.2.2 does not cap fastapi (3.3 caps it below 0.137); fastapi 0.165 brings cadwyn 9, whose
#   schema generation rejects the execution API's TITerminalStatePayload, so the DAG processor
#   and API server do not start.
# - svcs 26.2 attaches and removes app.state.svcs_registry in its lifespan; 3.2.2's in-process
#   execution API (dag.test) then fails every call with "'State' object has no attribute
#   'svcs_registry'" (3.3 gives that app a registry of its own).
RESOLVE_af32-py312 := "fastapi<0.137" "svcs<26.2"
PYTHON_VERSION_af31-py310 := 3.10
PYTHON_VERSION_af32-py312 := 3.12
PYTHON_VERSION_af33-py313 := 3.13

# An interpreter for Python $(1): pyenv's newest $(1).x if pyenv is there, else python$(1).
find_python = $(shell for p in \
	"$$(PYENV_VERSION=$$(pyenv latest $(1) 2>/dev/null) pyenv which python$(1) 2>/dev/null)" \
	"$$(command -v python$(1))"; do \
	[ -n "$$p" ] && "$$p" -c "" 2>/dev/null && { echo "$$p"; break; }; done)

define compat_cell
$(COMPAT_VENVS)/$(1)/.installed: pyproject.toml constraints/$(1).txt
	test -x $(COMPAT_VENVS)/$(1)/bin/python || \
	  $$(or $$(call find_python,$(PYTHON_VERSION_$(1))),$$(error no python$(PYTHON_VERSION_$(1)) found)) \
	  -m venv $(COMPAT_VENVS)/$(1)
	$(COMPAT_VENVS)/$(1)/bin/python -m pip install --quiet --upgrade "pip>=24"
	$(COMPAT_VENVS)/$(1)/bin/python -m pip install --quiet -c constraints/$(1).txt -e ".[dev]"
	touch $$@

compat-venv-$(1): $(COMPAT_VENVS)/$(1)/.installed

compat-pytest-$(1): $(COMPAT_VENVS)/$(1)/.installed
	$(COMPAT_VENVS)/$(1)/bin/python -m pytest $(COMPAT_TESTS) $(COMPAT_PYTEST_ARGS) \
	  --basetemp=$(COMPAT_VENVS)/$(1)/tmp 2>&1 | tee $(COMPAT_VENVS)/$(1)/pytest.log; \
	  exit $$$${PIPESTATUS[0]}

# Resolve afresh: a new venv with the cell's Airflow pinned and everything else left to pip.
compat-constraints-$(1):
	rm -rf $(COMPAT_VENVS)/$(1)
	$$(or $$(call find_python,$(PYTHON_VERSION_$(1))),$$(error no python$(PYTHON_VERSION_$(1)) found)) \
	  -m venv $(COMPAT_VENVS)/$(1)
	$(COMPAT_VENVS)/$(1)/bin/python -m pip install --quiet --upgrade "pip>=24"
	$(COMPAT_VENVS)/$(1)/bin/python -m pip install --quiet "apache-airflow==$(AIRFLOW_$(1))" \
	  $(RESOLVE_$(1)) -e ".[dev]"
	mkdir -p constraints
	{ echo "# Pinned versions for the compatibility cell $(1): Airflow $(AIRFLOW_$(1)) on Python $(PYTHON_VERSION_$(1))."; \
	  echo "# Regenerate with: make constraints-compat CELLS=$(1)"; \
	  $(COMPAT_VENVS)/$(1)/bin/python -m pip freeze --exclude-editable | grep -v '^airflow-provider-flux'; \
	} > constraints/$(1).txt.new
	mv constraints/$(1).txt.new constraints/$(1).txt
	touch $(COMPAT_VENVS)/$(1)/.installed

.PHONY: compat-venv-$(1) compat-pytest-$(1) compat-constraints-$(1)
endef
$(foreach cell,$(COMPAT_CELLS),$(eval $(call compat_cell,$(cell))))

# Every cell runs even when one fails; the summary lists each, and the exit status is 1 if any
# failed.
test-compat: SHELL := /bin/bash
test-compat:
	@status=0; summary=""; \
	for cell in $(CELLS); do \
	  start=$$(date +%s); \
	  if $(MAKE) --no-print-directory compat-pytest-$$cell SHELL=/bin/bash; then verdict=ok; \
	  else verdict=FAILED; status=1; fi; \
	  counts=$$(tail -n 1 $(COMPAT_VENVS)/$$cell/pytest.log 2>/dev/null | tr -d '='); \
	  airflow=$$(sed -n 's/^apache-airflow==//p' constraints/$$cell.txt 2>/dev/null); \
	  summary="$$summary$$(printf '\n  %-11s Airflow %-6s %-6s %4ss  %s' \
	    $$cell "$$airflow" $$verdict $$(( $$(date +%s) - start )) "$$counts")"; \
	done; \
	echo; echo "compat matrix ($(COMPAT_TESTS)):$$summary"; \
	exit $$status

constraints-compat:
	@for cell in $(CELLS); do $(MAKE) --no-print-directory compat-constraints-$$cell || exit 1; done
