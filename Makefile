# Every target creates .venv on first use, so a fresh clone needs only Python 3.11+ and git.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python

.PHONY: devnet test soak chaos-soak fuzz bench bench-foundation bench-settlement bench-gossip bench-epoch bench-linkfaults lint clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "meshpay needs Python 3.11 or newer (found " + sys.version.split()[0] + ")")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $@

devnet: $(VENV)/.installed
	$(VENV)/bin/devnet up $(DEVNET_ARGS)

# Two workers, a test file each at a time (module fixtures such as a devnet stay in one worker).
test: $(VENV)/.installed
	$(PY) -m pytest -q -n 2 --dist loadfile

soak: $(VENV)/.installed
	$(PY) -m pytest -q --soak -m soak

# The long fuzz run of every decoder (tests/fuzz/run.py): coverage-guided with atheris when it
# installs, else the seeded mutation engine. FUZZ_RUNS inputs in all (default 1,000,000).
FUZZ_RUNS ?= 1000000
fuzz: $(VENV)/.installed
	$(PY) -m pip install --quiet atheris || echo "atheris did not install: using the mutation engine"
	$(PY) -m tests.fuzz.run --runs $(FUZZ_RUNS)
# The whole set (foundation, settlement, devnet at full and half load, HTTP vs binary, idle, scaling):
# one table; `make bench BENCH_ARGS=--json` for JSON.
bench: $(VENV)/.installed
	$(PY) -m tests.bench.suite $(BENCH_ARGS)
# Needs root: 10 minutes of `devnet chaos` over test hosts with every nemesis, and 2 on 127.0.0.1.
chaos-soak: $(VENV)/.installed
	$(PY) -m pytest -q --soak -s tests/test_chaos_soak.py

bench-foundation: $(VENV)/.installed
	$(PY) -m tests.bench.foundation

bench-settlement: $(VENV)/.installed
	$(PY) -m tests.bench.settlement

bench-gossip: $(VENV)/.installed
	$(PY) -m tests.bench.gossip

bench-epoch: $(VENV)/.installed
	$(PY) -m tests.bench.epoch $(BENCH_ARGS)
# Needs root (network namespaces): requested vs measured delay, jitter, loss of `devnet slow`.
bench-linkfaults: $(VENV)/.installed
	$(PY) -m tests.bench.linkfaults

lint: $(VENV)/.installed
	$(PY) -m pip install --quiet ruff
	$(PY) -m ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
