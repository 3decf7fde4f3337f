"""Drive `python -m tests.gossip_node` nodes as separate OS processes on 127.0.0.1.

Used by tests/test_gossip_processes.py and tests/bench/gossip.py. Each process runs in its own
process group (so a SIGKILL takes nothing else with it); a thread per process reads its JSON-line
stdout into `ProcNode` state under one lock, and `wait_until` polls that state with a deadline.
Always call `close()` (it kills every process group it started).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crypto.keys import SigningKey

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


@dataclass
class ProcNode:
    index: int
    key_seed: bytes
    incarnation: int = 0
    port: int = 0
    id: str = ""
    proc: subprocess.Popen[bytes] | None = None
    ready: bool = False
    exited: bool = False
    states: dict[str, str] = field(default_factory=dict)  # peer hex -> latest state reported
    delivered: Counter[str] = field(default_factory=Counter)  # broadcast id -> times delivered
    published: dict[str, float] = field(default_factory=dict)
    replies: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    errors: list[str] = field(default_factory=list)
    stderr_path: str = ""

    def sees_alive(self) -> set[str]:
        return {p for p, s in self.states.items() if s == "alive"}


class ProcCluster:
    def __init__(self, n: int, *, seed: int = 1, extra_args: list[str] | None = None,
                 quiet: bool = False) -> None:
        rng = random.Random(seed)
        self.network = rng.randbytes(32)
        self.nodes = [ProcNode(i, rng.randbytes(32)) for i in range(n)]
        self.extra_args = list(extra_args or [])
        self.quiet = quiet
        self.lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._logdir = tempfile.mkdtemp(prefix="meshpay-gossip-")
        # Per-node interpreter arguments before `-m tests.gossip_node` (e.g. a profiler).
        self.python_args: dict[int, list[str]] = {}

    # ---- processes ---------------------------------------------------------------------------
    def start(self, node: ProcNode, *, seeds: list[int] | None = None, timeout: float = 15.0) -> None:
        """Start (or restart) a node and wait for its `ready` line."""
        seed_nodes = [0] if seeds is None else seeds
        args = [sys.executable, *self.python_args.get(node.index, []), "-m", "tests.gossip_node", "--key-seed", node.key_seed.hex(),
                "--network", self.network.hex(), "--port", str(node.port),
                "--incarnation", str(node.incarnation), *self.extra_args]
        if self.quiet:
            args.append("--quiet")
        for other in self.nodes:  # the whole cluster is the committee
            args += ["--committee", SigningKey.from_seed(other.key_seed).public.hex()]
        for i in seed_nodes:
            if i != node.index:
                assert self.nodes[i].port, f"seed node {i} has no port yet"
                args += ["--seed", f"{HOST}:{self.nodes[i].port}"]
        with self.lock:
            node.ready = node.exited = False
            node.states.clear()
            node.delivered.clear()
            node.published.clear()
            node.replies.clear()
        node.stderr_path = os.path.join(self._logdir, f"node{node.index}-inc{node.incarnation}.log")
        with open(node.stderr_path, "wb") as err:
            node.proc = subprocess.Popen(args, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, start_new_session=True)
        thread = threading.Thread(target=self._reader, args=(node, node.proc), daemon=True)
        thread.start()
        self._threads.append(thread)
        if not self.wait_until(lambda: node.ready or node.exited, timeout):
            raise TimeoutError(f"node {node.index} not ready within {timeout} s: {self.stderr(node)}")
        if not node.ready:
            raise RuntimeError(f"node {node.index} exited at start: {self.stderr(node)}")

    def kill(self, node: ProcNode) -> None:
        """SIGKILL the node's process group and reap it."""
        proc = node.proc
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        node.proc = None

    def close(self) -> None:
        for node in self.nodes:
            self.kill(node)
        for thread in self._threads:
            thread.join(timeout=2)

    def stderr(self, node: ProcNode, tail: int = 2000) -> str:
        try:
            return Path(node.stderr_path).read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    # ---- talking to a node -------------------------------------------------------------------
    def send(self, node: ProcNode, cmd: dict[str, Any]) -> None:
        assert node.proc is not None and node.proc.stdin is not None
        node.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        node.proc.stdin.flush()

    def ask(self, node: ProcNode, cmd: dict[str, Any], reply: str, timeout: float = 30.0) -> dict[str, Any]:
        """Send a command and wait for its reply event."""
        with self.lock:
            before = len(node.replies[reply])
        self.send(node, cmd)
        if not self.wait_until(lambda: len(node.replies[reply]) > before or node.exited, timeout):
            raise TimeoutError(f"node {node.index}: no {reply!r} reply within {timeout} s")
        with self.lock:
            if len(node.replies[reply]) <= before:
                raise RuntimeError(f"node {node.index} exited: {self.stderr(node)}")
            return node.replies[reply][before]

    def _reader(self, node: ProcNode, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            event = msg.get("event")
            with self.lock:
                if node.proc is not proc:
                    continue  # a line from a previous incarnation still in the pipe
                if event == "ready":
                    node.id, node.port, node.ready = msg["id"], msg["port"], True
                elif event == "member":
                    node.states[msg["peer"]] = msg["state"]
                elif event == "delivered":
                    node.delivered[msg["id"]] += 1
                elif event == "published":
                    node.published[msg["id"]] = msg["t"]
                elif event == "error":
                    node.errors.append(msg["error"])
                else:
                    node.replies[event].append(msg)
        with self.lock:
            if node.proc is proc or node.proc is None:
                node.exited = True

    # ---- waiting -------------------------------------------------------------------------------
    def wait_until(self, predicate: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                if predicate():
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(step)
