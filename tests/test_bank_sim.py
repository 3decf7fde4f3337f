"""The bank workload under faults, in deterministic simulation (same Node code as the daemon).

8 peers (N=4, W=3), 60 accounts, concurrent clients with retries and deliberately conflicting
orders, 2% loss, 1% duplication, jittered latency (reordering), a partition, crash-and-restart of
owners (stores survive, memory does not) and one Byzantine owner that equivocates and relays forged
certificates. After the faults heal, every invariant in `tests/sim/workload.py` must hold.

    pytest tests/test_bank_sim.py                                   # the CI seeds
    pytest tests/test_bank_sim.py --soak -m soak --seeds 2000       # thousands (see README)
    pytest tests/test_bank_sim.py --soak -m soak --first-seed 1234 --seeds 1   # replay one seed
"""

from __future__ import annotations

import random

import pytest
import trio
from trio.testing import MockClock

from tests.sim.bank import BankNetwork
from tests.sim.byzantine import ByzantineSettlement
from tests.sim.network import LinkProfile
from tests.sim.workload import Workload, check

CI_SEEDS = list(range(1, 4))  # thousands more under --soak


async def run_scenario(seed: int, *, duration: float = 20.0) -> tuple[Workload, list[str]]:
    rng = random.Random(f"{seed}/chaos")
    bank = BankNetwork(
        seed, peers=8, accounts=60, profile=LinkProfile(latency=(0.001, 0.02), loss=0.02, duplicate=0.01),
        byzantine={7: ByzantineSettlement},
    )
    try:
        async with trio.open_nursery() as nursery:
            await bank.start(nursery)
            await trio.sleep(3)
            work = Workload(bank, seed)
            done = trio.Event()

            async def load() -> None:
                await work.run(duration)
                done.set()

            nursery.start_soon(load)
            honest = [p for p in bank.members if p.index != 7]
            # A partition that cuts three peers off for a while.
            await trio.sleep(rng.uniform(1, 4))
            cut = set(rng.sample([p.id for p in bank.members], 3))
            bank.net.partition(cut, {p.id for p in bank.members} - cut)
            await trio.sleep(rng.uniform(4, 8))
            bank.net.heal()
            # Crash two honest owners one after the other; each comes back on its old store.
            for _ in range(2):
                victim = rng.choice([p for p in honest if p.up])
                bank.crash(victim)
                await trio.sleep(rng.uniform(2, 6))
                await bank.restart(victim)
                await trio.sleep(rng.uniform(0.5, 2))
            await done.wait()
            bank.net.heal()
            problems = check(bank, work.record)
            await bank.wait_for(lambda: not check(bank, work.record), timeout=120, step=2)
            problems = check(bank, work.record)
            nursery.cancel_scope.cancel()
    finally:
        bank.close()
    return work, problems


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "soak_seed" in metafunc.fixturenames:
        first = metafunc.config.getoption("--first-seed")
        count = metafunc.config.getoption("--seeds") if metafunc.config.getoption("--soak") else 1
        metafunc.parametrize("soak_seed", range(first, first + count))


@pytest.mark.soak
def test_bank_workload_soak(soak_seed: int) -> None:
    test_bank_workload_under_faults(soak_seed)


@pytest.mark.parametrize("seed", CI_SEEDS)
def test_bank_workload_under_faults(seed: int) -> None:
    work, problems = trio.run(run_scenario, seed, clock=MockClock(autojump_threshold=0))
    assert problems == [], f"seed {seed}: {problems[:10]}"
    record = work.record
    honest_accounts = 60 - len(work.conflicting)
    # Liveness under faults: the network kept making progress for nearly every honest client.
    assert len(record.certified) >= honest_accounts, f"seed {seed}: only {len(record.certified)} certified"
    assert record.retries > 0, f"seed {seed}: the faults never forced a retry (scenario too gentle)"
    assert record.conflicts_raced == len(work.conflicting)
    assert record.conflicts_certified <= record.conflicts_raced
    assert ByzantineSettlement.forgeries > 0
