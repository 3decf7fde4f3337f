"""Small Linux network-namespace primitives: sockets opened inside a named namespace, and commands
run there (`ip netns exec`). Nothing here creates or removes namespaces (devnet/hosts.py does).

A socket belongs to the namespace its creating thread was in when it was made, whatever that
thread does afterwards; so one process can hold sockets in many namespaces: switch the thread in
with setns(2), make the socket, switch back. Python 3.11 has no os.setns, hence ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
from collections.abc import Iterator
from pathlib import Path

NETNS_DIR = Path("/run/netns")  # where `ip netns add` pins named namespaces
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(None, use_errno=True)


def path(name: str) -> Path:
    return NETNS_DIR / name


def exists(name: str) -> bool:
    return path(name).exists()


def names() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except OSError:
        return []


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextlib.contextmanager
def inside(name: str) -> Iterator[None]:
    """The calling thread is in namespace `name` for the duration (only this thread)."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        target = os.open(path(name), os.O_RDONLY)
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            _setns(own)
    finally:
        os.close(own)


def socket_in(name: str, family: int, kind: int, proto: int = 0) -> socket.socket:
    """A socket that lives in namespace `name` (usable from any thread afterwards)."""
    with inside(name):
        return socket.socket(family, kind, proto)


def exec_prefix(name: str) -> list[str]:
    """The argv prefix that runs a command in namespace `name` (then execs it: same pid)."""
    return ["ip", "netns", "exec", name]
