# Every target creates .venv on first use, so a fresh clone needs only Python 3.11+ and git.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: devnet test soak chaos-soak bench-foundation bench-settlement bench-gossip bench-linkfaults lint clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "meshpay needs Python 3.11 or newer (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

devnet: $(VENV)/.installed
	$(VENV)/bin/devnet up $(DEVNET_ARGS)

test: $(VENV)/.installed
	$(PY) -m pytest -q

soak: $(VENV)/.installed
	$(PY) -m pytest -q --soak -m soak

# Needs root: 10 minutes of `devnet chaos` over test hosts with every nemesis, and 2 on 127.0.0.1.
chaos-soak: $(VENV)/.installed
	$(PY) -m pytest -q --soak -s tests/test_chaos_soak.py

bench-foundation: $(VENV)/.installed
	$(PY) -m tests.bench.foundation

bench-settlement: $(VENV)/.installed
	$(PY) -m tests.bench.settlement

bench-gossip: $(VENV)/.installed
	$(PY) -m tests.bench.gossip

# Needs root (network namespaces): requested vs measured delay, jitter, loss of `devnet slow`.
bench-linkfaults: $(VENV)/.installed
	$(PY) -m tests.bench.linkfaults

lint: $(VENV)/.installed
	$(PY) -m pip install --quiet ruff
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
