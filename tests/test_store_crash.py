"""Crash safety with a real process: SIGKILL a committing child, then check what survived.

The child (tests/store_crash_child.py) commits 5-key batches through the group-commit writer and
prints `ack <i>` once each commit returns. The parent kills it with SIGKILL at a random moment
(drawn from a seeded random.Random, so a failure replays from the seed in its message), reopens
the store and checks:

- the store opens (RocksDB recovers from the torn WAL tail without complaint);
- every acked batch is there, all 5 keys with the right values;
- no batch is partially present;
- the batches present are exactly 0..max: group commit writes in submission order and recovery
  keeps a prefix of the WAL, so a later batch can never survive without an earlier one.

Each seed then runs the child a second time on the recovered database (it continues numbering
from what is there) and kills it again, so recovery-then-more-writes is covered too.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from store import Store
from tests import store_crash_child as child

REPO = Path(__file__).resolve().parent.parent
FIRST_ACK_TIMEOUT = 30.0
ROUNDS_PER_SEED = 2


@dataclass
class ChildRun:
    proc: subprocess.Popen[bytes]
    acks: list[int] = field(default_factory=list)
    junk: list[bytes] = field(default_factory=list)
    first_ack: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    def read(self) -> None:
        # Drain stdout continuously so the child never blocks on a full pipe.
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(b"ack "):
                self.acks.append(int(line[4:]))
                self.first_ack.set()
            else:
                self.junk.append(line)


def start_child(db: Path) -> ChildRun:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.store_crash_child", str(db)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    run = ChildRun(proc)
    run.reader = threading.Thread(target=run.read, daemon=True)
    run.reader.start()
    return run


def kill_at_random_point(run: ChildRun, rng: random.Random, seed: int) -> float:
    """Wait for the first ack, then SIGKILL after a random delay; returns the delay."""
    if not run.first_ack.wait(FIRST_ACK_TIMEOUT):
        run.proc.kill()
        _, err = run.proc.communicate()
        pytest.fail(f"seed {seed}: child produced no ack; rc={run.proc.returncode} stderr:\n"
                    f"{err.decode(errors='replace')}")
    delay = rng.uniform(0.05, 0.6)
    time.sleep(delay)
    still_running = run.proc.poll() is None
    run.proc.send_signal(signal.SIGKILL)
    run.proc.wait()
    assert run.reader is not None
    run.reader.join(10)
    stderr = ""
    if run.proc.stderr is not None:
        stderr = run.proc.stderr.read().decode(errors="replace")
        run.proc.stderr.close()
    if run.proc.stdout is not None:
        run.proc.stdout.close()
    assert still_running, f"seed {seed}: child exited before the kill:\n{stderr}"
    assert run.proc.returncode == -signal.SIGKILL, f"seed {seed}: rc {run.proc.returncode}"
    assert not run.junk, f"seed {seed}: unexpected child output {run.junk[:3]}\n{stderr}"
    return delay


def check_store(db: Path, acked: set[int], seed: int, rnd: int) -> int:
    """Reopen after the crash and check every promise; returns how many batches are present."""
    tag = f"seed {seed} round {rnd}"
    try:
        store = Store.open(db, child.NETWORK)
    except Exception as exc:
        raise AssertionError(f"{tag}: store does not open after SIGKILL: {exc!r}") from exc
    try:
        present: dict[int, dict[int, bytes]] = {}
        for key, value in store.scan(child.PREFIX):
            assert len(key) == 10, f"{tag}: unexpected key {key!r}"
            i, j = child.parse_key(key)
            present.setdefault(i, {})[j] = value
        for i in sorted(acked):
            assert i in present, f"{tag}: acked batch {i} is missing after the crash"
        for i, got in present.items():
            assert sorted(got) == list(range(child.KEYS_PER_BATCH)), (
                f"{tag}: batch {i} is partially present: keys {sorted(got)}")
            for j, value in got.items():
                assert value == child.batch_value(i, j), f"{tag}: batch {i} key {j} has a wrong value"
        assert sorted(present) == list(range(len(present))), (
            f"{tag}: surviving batches are not a prefix: gaps below {max(present)}, e.g. "
            f"{sorted(set(range(max(present) + 1)) - set(present))[:5]}")
        # The meta written at create survived as well.
        assert store.get_meta("network") == child.NETWORK
        return len(present)
    finally:
        store.close()


def crash_and_check(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    db = tmp_path / "db"
    total_acked: set[int] = set()
    present = 0
    for rnd in range(ROUNDS_PER_SEED):
        run = start_child(db)
        kill_at_random_point(run, rng, seed)
        acked = set(run.acks)
        assert acked, f"seed {seed} round {rnd}: no acks"
        assert len(acked) == len(run.acks), f"seed {seed}: a batch number was acked twice"
        # A second round continues after the first round's survivors, never reuses a number.
        assert min(acked) >= present, f"seed {seed} round {rnd}: batch numbers went backwards"
        total_acked |= acked
        present = check_store(db, total_acked, seed, rnd)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(12))
def test_sigkill_during_group_commit_keeps_acked_batches(tmp_path: Path, seed: int) -> None:
    crash_and_check(tmp_path, seed)


@pytest.mark.soak
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1000, 1200))
def test_sigkill_soak(tmp_path: Path, seed: int) -> None:
    crash_and_check(tmp_path, seed)


def test_child_helpers_round_trip() -> None:
    # The parent decodes what the child wrote with the child's own helpers: keep them consistent.
    key = child.batch_key(123456789, 4)
    assert child.parse_key(key) == (123456789, 4)
    assert key.startswith(child.PREFIX) and len(key) == 10
    assert child.batch_value(1, 0) != child.batch_value(1, 1) != child.batch_value(2, 1)
