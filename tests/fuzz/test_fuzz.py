"""The short fuzz run, in the default suite: every decoder of outside input gets a few thousand
mutations of valid encodings and some plain random bytes, and may raise only its documented error
(tests/fuzz/targets.py lists them). Seeded, so a failure replays; `make fuzz` runs the long,
coverage-guided version of the same targets."""

from __future__ import annotations

import random
import time

import pytest

from crypto.schema import decode_any, registered
from tests.fuzz.mutate import mutate
from tests.fuzz.targets import TARGETS, Target

# Inputs per target: about a second each on a quiet machine (the handshake does key agreement).
SHORT = {"message": 4000, "frame": 4000, "channel": 2000, "handshake": 500, "genesis": 1500,
         "keystore": 1500, "api_json": 4000}


def test_every_target_has_a_budget() -> None:
    assert set(SHORT) == set(TARGETS)


def test_seeds_are_valid_inputs() -> None:
    # A seed that already fails would make the mutations start from garbage.
    kinds = {decode_any(seed).KIND for seed in TARGETS["message"].seeds()}
    assert kinds == set(registered()), "a registered message kind has no seed"
    for target in TARGETS.values():
        for seed in target.seeds():
            target.run(seed)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_short_fuzz_raises_only_documented_errors(name: str) -> None:
    target: Target = TARGETS[name]
    rng = random.Random(f"short-fuzz/{name}")
    seeds = target.seeds()
    began = time.process_time()
    for i in range(SHORT[name]):
        data = rng.randbytes(rng.randrange(64)) if i % 10 == 0 else mutate(rng, rng.choice(seeds), seeds)
        try:
            target.run(data)
        except Exception as exc:
            raise AssertionError(f"{name} raised {type(exc).__name__}: {exc} for input {data[:300]!r}") from exc
    print(f"\n{name}: {SHORT[name]} inputs, {time.process_time() - began:.2f} s CPU")
