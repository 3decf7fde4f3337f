"""Running the `devnet` and `peer` commands as a user does, from tests (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SMALL = ("--peers", "3", "--replication", "3", "--quorum", "2", "--wallets", "2", "--no-fsync")


def env(**extra: str) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("MESHPAY_")}
    return {**base, "COLUMNS": "200", **extra}


def run(program: str, *args: str | Path, timeout: float = 120, check: bool = False,
        environ: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", program, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=environ or env())
    if check:
        assert proc.returncode == 0, f"{program} {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def devnet(*args: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return run("devnet", *args, **kwargs)


def pids_of(root: Path) -> list[int]:
    """Processes whose command line mentions this devnet (there must be none after `down`)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if (entry / "stat").read_text().rsplit(") ", 1)[1][0] == "Z":
                continue
        except (OSError, IndexError):
            continue
        if str(root) in cmd and "peer" in cmd and "run" in cmd:
            found.append(int(entry.name))
    return found


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def stop_process(proc: subprocess.Popen, signum: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Signal a process we started and wait for it; SIGKILL if it outlives `timeout`. Its status."""
    if proc.poll() is None:
        proc.send_signal(signum)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
