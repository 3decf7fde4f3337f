"""Acting on the network from the console: peer processes, load runs, payments between demo wallets.

On a devnet the console runs exactly the commands a person would type (`devnet kill`, `devnet
restart`, `devnet bench`, `wallet send`) against the devnet's directory, so it inherits their
checks and process tracking and never reaches into a peer. Each action answers with an
`ActionResult` that names the command it ran, for the page to show. Peers outside a devnet are
controlled through their admin API (peer/api_admin.py), which offers only a graceful stop; pausing
and starting a process again is its supervisor's job (docs/console.md).
"""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from console.peerapi import PeerApi, PeerError
from devnet.layout import Devnet, DevnetError

DEVNET_ACTIONS = ("pause", "resume", "stop", "start", "restart", "kill")
DEVNET_ACTIONS_BY_STATE = {"running": ("pause", "stop", "restart", "kill"), "paused": ("resume", "stop", "kill"),
                           "stopped": ("start",)}
ADMIN_ACTIONS = ("stop", "restart", "pause", "resume")
# devnet command lines per action; "stop" resumes a paused peer first, or SIGTERM would wait for it
_STEPS: dict[str, list[list[str]]] = {
    "pause": [["kill", "--signal", "STOP"]],
    "resume": [["kill", "--signal", "CONT"]],
    "stop": [["kill", "--signal", "CONT"], ["kill", "--signal", "TERM"]],
    "kill": [["kill", "--signal", "CONT"], ["kill", "--signal", "KILL"]],
    "start": [["restart"]],
    "restart": [["kill", "--signal", "CONT"], ["restart"]],
}
MAX_RATE = 5000.0
MAX_DURATION = 3600.0


@dataclass(frozen=True)
class ActionResult:
    ok: bool
    message: str
    command: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


async def _run(args: list[str], timeout: float) -> tuple[int | None, str, str]:
    """(exit status or None on timeout, stdout, stderr) of a command run without a shell."""
    with trio.move_on_after(timeout):
        done = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False,
                                      stdin=subprocess.DEVNULL)
        return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    return None, "", f"no result within {timeout:.0f} s"


def _shown(args: list[str]) -> str:
    """The command as a person would type it (`devnet …`, `wallet …`, not `python -m …`)."""
    return shlex.join(args[2:] if args[1:2] == ["-m"] else [Path(args[0]).name, *args[1:]])


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


class DevnetControl:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def devnet(self) -> Devnet:
        return Devnet.load(self.root)

    def _devnet_cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "devnet", *args, "--dir", str(self.root)]

    async def peer_action(self, name: str, action: str) -> ActionResult:
        if action not in _STEPS:
            return ActionResult(False, f"unknown action {action!r}; use one of {', '.join(DEVNET_ACTIONS)}")
        try:
            self.devnet().peer(name)
        except DevnetError as exc:
            return ActionResult(False, str(exc))
        shown = []
        steps = _STEPS[action]
        for i, step in enumerate(steps):
            args = self._devnet_cmd(*step[:1], name, *step[1:], "--json")
            shown.append(_shown(args))
            code, out, err = await _run(args, 90.0)
            # before another step, "not running" (exit 6) to SIGCONT only means there is nothing to resume
            if code != 0 and not (i < len(steps) - 1 and step[-1] == "CONT" and code == 6):
                reason = _last_line(err) or _last_line(out) or f"exit status {code}"
                return ActionResult(False, f"{action} {name} failed: {reason}", " && ".join(shown))
        done = {"pause": "paused (SIGSTOP)", "resume": "resumed (SIGCONT)", "stop": "stopped gracefully (SIGTERM)",
                "kill": "killed (SIGKILL)", "start": "started and rejoined", "restart": "restarted and rejoined"}
        return ActionResult(True, f"{name} {done[action]}", " && ".join(shown))

    async def send(self, sender: str, recipient: str, amount: str, gateway: str, memo: str = "") -> ActionResult:
        """`wallet send` from a demo wallet, waiting until the payment is certified."""
        devnet = self.devnet()
        wallets = {w.name: w.address for w in devnet.wallets}
        if sender not in wallets:
            return ActionResult(False, f"no demo wallet named {sender!r}")
        to = wallets.get(recipient, recipient)
        try:
            peer = devnet.peer(gateway).api
        except DevnetError as exc:
            return ActionResult(False, str(exc))
        args = [sys.executable, "-m", "wallet", "send", "-a", sender, "--to", to, "--amount", amount,
                "--memo", memo, "--wait", "certified", "--timeout", "20", "--wallet-dir", str(devnet.wallet_dir()),
                "--password-file", str(devnet.password_file), "--genesis", str(devnet.genesis_path),
                "--peer", peer, "--json"]
        code, out, err = await _run(args, 60.0)
        try:
            doc = json.loads(out) if out.strip() else {}
        except json.JSONDecodeError:
            doc = {}
        if code == 0 and "payment_id" in doc:
            return ActionResult(True, f"payment {doc['payment_id']} {doc.get('status')} (certificate verified by the "
                                "wallet)", _shown(args), {"payment_id": doc["payment_id"], "status": doc.get("status")})
        error = doc.get("error", {}) if isinstance(doc, dict) else {}
        message = error.get("message") if isinstance(error, dict) else None
        return ActionResult(False, f"the payment was not made: {message or _last_line(err) or f'exit {code}'}",
                            _shown(args), {"payment_id": error.get("payment_id")} if isinstance(error, dict) else {})


    async def committee(self, action: str, name: str | None) -> ActionResult:
        """`devnet add-peer` (a new peer joins as an observer, then one epoch change makes it a
        committee member) or `devnet remove-peer NAME`: proposed and approved on every committee
        peer as its operator would, waiting until the new committee serves."""
        if action == "add":
            args = self._devnet_cmd("add-peer", "--json")
        elif action == "remove" and name:
            try:
                self.devnet().peer(name)
            except DevnetError as exc:
                return ActionResult(False, str(exc))
            args = self._devnet_cmd("remove-peer", name, "--json")
        else:
            return ActionResult(False, "committee actions are add, or remove with a peer name")
        code, out, err = await _run(args, COMMITTEE_TIMEOUT)
        try:
            doc = json.loads(out) if out.strip() else {}
        except json.JSONDecodeError:
            doc = {}
        if code == 0 and isinstance(doc, dict) and "epoch" in doc:
            return ActionResult(True, f"epoch {doc['epoch']}: committee {', '.join(doc.get('committee', []))}",
                                _shown(args), {"epoch": doc["epoch"]})
        error = doc.get("error", {}) if isinstance(doc, dict) else {}
        message = error.get("message") if isinstance(error, dict) else None
        return ActionResult(False, f"the committee change failed: {message or _last_line(err) or f'exit {code}'}",
                            _shown(args))


COMMITTEE_TIMEOUT = 240.0  # a change waits for every new owner's handoff (devnet's own bound is 120 s)


class LoadRun:
    """One `devnet bench` at a chosen rate, run in the background and stoppable."""

    def __init__(self, control: DevnetControl) -> None:
        self.control = control
        self.state = "idle"  # idle | running | finished | stopped | failed
        self.rate = 0.0
        self.duration = 0.0
        self.accounts = 0
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.report: dict[str, Any] | None = None
        self.error = ""
        self.command = ""
        self._process: trio.Process | None = None
        self._stopping = False

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "rate": self.rate, "duration": self.duration, "accounts": self.accounts,
                "started_at": self.started_at, "ended_at": self.ended_at, "command": self.command,
                "error": self.error, "report": self.report}

    async def start(self, nursery: trio.Nursery, rate: float, duration: float) -> ActionResult:
        if self.state == "running":
            return ActionResult(False, "a load run is already running; stop it first")
        if not 0 < rate <= MAX_RATE or not 1 <= duration <= MAX_DURATION:
            return ActionResult(False, f"rate must be in (0, {MAX_RATE:.0f}] payments/s and duration in "
                                f"[1, {MAX_DURATION:.0f}] s")
        # Each account sends its next payment only after the previous one is certified.
        accounts = int(max(10, min(2000, rate / 4)))
        args = self.control._devnet_cmd("bench", "--rate", f"{rate:g}", "--duration", f"{duration:g}",
                                        "--accounts", str(accounts), "--json")
        self.rate, self.duration, self.accounts, self.command = rate, duration, accounts, _shown(args)
        self.state, self.report, self.error, self._stopping = "running", None, "", False
        self.started_at, self.ended_at = time.time(), None
        self._process = await nursery.start(self._run, args)
        return ActionResult(True, f"load run started: {rate:g} payments/s for {duration:g} s over {accounts} "
                            "accounts (funding them first)", self.command)

    async def _run(self, args: list[str], *, task_status: trio.TaskStatus[trio.Process]) -> None:
        async with trio.open_nursery() as nursery:
            async def run(task_status: trio.TaskStatus[trio.Process]) -> None:
                done = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False,
                                              stdin=subprocess.DEVNULL, start_new_session=True,
                                              task_status=task_status)
                self._finished(done)

            task_status.started(await nursery.start(run))

    def _finished(self, done: subprocess.CompletedProcess[bytes]) -> None:
        self.ended_at = time.time()
        out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
        if self._stopping:
            self.state = "stopped"
            return
        if done.returncode == 0:
            try:
                self.report = json.loads(out)
                self.state = "finished"
                return
            except json.JSONDecodeError:
                pass
        self.state = "failed"
        self.error = _last_line(err) or f"exit status {done.returncode}"

    async def stop(self) -> ActionResult:
        if self.state != "running" or self._process is None:
            return ActionResult(False, "no load run is running")
        self._stopping = True
        self._process.send_signal(signal.SIGINT)  # the bench stops at once; nothing half-paid is lost
        return ActionResult(True, "load run stopping", self.command)


_ADMIN_DONE = {
    "stop": "is stopping gracefully; its supervisor decides whether it starts again",
    "restart": "is restarting: a graceful stop, then the same `peer run` on its data",
    "pause": "takes no new payments (503 paused) until resumed; it still votes and applies",
    "resume": "takes new payments again",
}


async def admin_action(api: PeerApi, name: str, action: str) -> ActionResult:
    """One of `ADMIN_ACTIONS` through the peer's admin API (peer/api_admin.py)."""
    command = f"POST {api.url}/v1/admin/{action}"
    if action not in ADMIN_ACTIONS:
        return ActionResult(False, f"unknown action {action!r}; use one of {', '.join(ADMIN_ACTIONS)}")
    try:
        await api.admin(action)
    except PeerError as exc:
        return ActionResult(False, f"{action} {name} failed: {exc}", command)
    return ActionResult(True, f"{name} {_ADMIN_DONE[action]}", command)
