"""The container image, built from this repository, runs a working network (soak: minutes).

    make soak   (or: python -m pytest -q --soak tests/test_container_image.py -s)

Steps, each skipped with the exact reason when this machine cannot do it:
1. a base image: `localhost/meshpay-base:bookworm` if podman has it, else one made with
   debootstrap (cached under /var/tmp/meshpay-base; pip in the build trusts the host's CA bundle,
   copied in, for machines whose PyPI access goes through a proxy with its own CA);
2. `podman build` of deploy/Containerfile (the repository as it is now);
3. the compose init script, in the image, making a 3-peer network's keys and genesis (N=3, W=2)
   in a setup directory;
4. three peers from the image, each in its own network namespace with its own address (made by the
   devnet's test-host code, devnet/hosts.py), all on ports 7000/8000, joining through peer0:
   as containers (`podman run` with runc and ulimits no higher than this process's, which a
   sandbox without CAP_SYS_RESOURCE allows), or, where podman cannot run containers, from the
   image's filesystem (`podman image mount`) with chroot in a private mount namespace;
5. a payment from the genesis treasury, through the peers' HTTP API, that must settle, read back
   from every owner of the recipient.
Everything made is removed at the end: containers or processes, namespaces and bridge, mounts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from crypto.address import decode_address, encode_address
from crypto.keys import SigningKey
from devnet import hosts
from devnet.layout import Devnet
from peer import genesis as genesis_file
from peer.ring import Ring
from tests.devnet_support import REPO, wait_for
from tests.wallet_support import wallet

pytestmark = pytest.mark.soak

BASE = "localhost/meshpay-base:bookworm"
IMAGE = "localhost/meshpay-peer:soak"
BASE_CACHE = Path("/var/tmp/meshpay-base")
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
UID, GID = 10001, 999  # the image's `meshpay` user
PEERS = 3
# No limit above this process's own: setting one needs CAP_SYS_RESOURCE, which sandboxes lack.
ULIMITS = ["--ulimit", "nofile=4096:4096", "--ulimit", "nproc=4096:4096"]


def _run(args: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)


def _tail(proc: subprocess.CompletedProcess[str]) -> str:
    return (proc.stderr.strip() or proc.stdout.strip())[-600:]


def _base_image() -> None:
    if _run(["podman", "image", "exists", BASE], 60).returncode == 0:
        return
    if shutil.which("debootstrap") is None:
        pytest.skip(f"no base image: podman has no {BASE} and debootstrap is not installed "
                    "(apt-get install debootstrap), and no registry may be reachable to pull one")
    rootfs = BASE_CACHE / "rootfs"
    if not (rootfs / "usr" / "bin" / "python3").exists():
        shutil.rmtree(rootfs, ignore_errors=True)
        rootfs.mkdir(parents=True)
        made = _run(["debootstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm", str(rootfs),
                     "http://deb.debian.org/debian"], 3600)
        if made.returncode != 0:
            pytest.skip(f"debootstrap could not make a base image here: {_tail(made)}")
    if CA_BUNDLE.exists():
        (rootfs / "etc" / "ssl" / "certs").mkdir(parents=True, exist_ok=True)
        shutil.copy(CA_BUNDLE, rootfs / "etc" / "ssl" / "certs" / CA_BUNDLE.name)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    imported = _run(["podman", "import", "-", BASE], 1800, stdin=tar.stdout)
    tar.wait()
    if imported.returncode != 0:
        pytest.skip(f"podman could not import the debootstrap base: {_tail(imported)}")


def _build() -> None:
    args = ["podman", "build", "--isolation", "chroot", "--network", "host", "-f", "deploy/Containerfile",
            "--build-arg", f"BASE_IMAGE={BASE}", "-t", IMAGE, "."]
    if CA_BUNDLE.exists():
        args[-3:-3] = ["--build-arg", f"PIP_CERT={CA_BUNDLE}"]
    built = _run(args, 3600, cwd=REPO)
    assert built.returncode == 0, f"podman build failed:\n{built.stdout[-3000:]}\n{built.stderr[-2000:]}"


class Containers:
    """Peers as real containers, each joined to its own network namespace."""

    how = "podman run (runc) in the namespaces"

    def __init__(self, tag: str) -> None:
        self.names: list[str] = []
        self.tag = tag

    @staticmethod
    def unusable() -> str | None:
        probe = _run(["podman", "run", "--rm", "--runtime", "runc", *ULIMITS, "--network", "none",
                      "--entrypoint", "/opt/meshpay/bin/peer", IMAGE, "--help"], 600)
        return None if probe.returncode == 0 else f"`podman run` fails here: {_tail(probe)}"

    def _volumes(self, mounts: dict[Path, str]) -> list[str]:
        return [arg for host, inside in mounts.items() for arg in ("-v", f"{host}:{inside}")]

    def init(self, setup: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return _run(["podman", "run", "--rm", "--runtime", "runc", *ULIMITS, "--network", "none",
                     *self._volumes({setup: "/config", REPO / "deploy": "/mnt:ro"}),
                     *[a for k, v in env.items() for a in ("-e", f"{k}={v}")],
                     "--entrypoint", "/bin/sh", IMAGE, "/mnt/compose-init.sh"], 900)

    def start(self, i: int, namespace: str, data: Path, setup: Path, env: dict[str, str]) -> None:
        name = f"mp{self.tag}-peer{i}"
        started = _run(["podman", "run", "-d", "--name", name, "--runtime", "runc", *ULIMITS,
                        "--network", f"ns:/run/netns/{namespace}",
                        *self._volumes({setup: "/config:ro", data: "/data"}),
                        *[a for k, v in env.items() for a in ("-e", f"{k}={v}")], IMAGE], 600)
        assert started.returncode == 0, _tail(started)
        self.names.append(name)

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{_run(['podman', 'logs', '--tail', '15', n], 60).stdout}" for n in self.names)

    def stop(self) -> None:
        if self.names:
            _run(["podman", "rm", "-f", "-t", "5", *self.names], 300)


class Chroot:
    """Peers from the image's filesystem: chroot in a private mount namespace, in each network
    namespace (where podman cannot run containers)."""

    how = "chroot into the image's filesystem (podman image mount), one mount namespace per peer"

    def __init__(self, tag: str) -> None:
        mounted = _run(["podman", "image", "mount", IMAGE], 300)
        assert mounted.returncode == 0, _tail(mounted)
        self.root = mounted.stdout.strip()
        self.procs: list[subprocess.Popen] = []

    def _command(self, mounts: dict[Path, str], argv: list[str], env: dict[str, str]) -> list[str]:
        binds = " && ".join(f"mount --bind {'-o ro ' if ro else ''}{host} {self.root}{inside.removesuffix(':ro')}"
                            for host, inside in mounts.items() for ro in [inside.endswith(":ro")])
        environment = {"PATH": "/opt/meshpay/bin:/usr/local/bin:/usr/bin:/bin", "PYTHONUNBUFFERED": "1", "HOME": "/data",
                       **env}
        script = (f"{binds} && mount -t proc proc {self.root}/proc && exec chroot --userspec={UID}:{GID} {self.root} "
                  f"/usr/bin/env -i {' '.join(f'{k}={v!r}' for k, v in environment.items())} {' '.join(argv)}")
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]

    def init(self, setup: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return _run(self._command({setup: "/config", REPO / "deploy": "/mnt:ro"}, ["/bin/sh", "/mnt/compose-init.sh"],
                                  env), 900)

    def start(self, i: int, namespace: str, data: Path, setup: Path, env: dict[str, str]) -> None:
        command = self._command({setup: "/config:ro", data: "/data"}, ["/usr/local/bin/meshpay-entrypoint"], env)
        log = open(data.parent / f"peer{i}.log", "w")  # noqa: SIM115  (kept open for the process)
        self.procs.append(subprocess.Popen(["ip", "netns", "exec", namespace, *command], stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True))

    def logs(self) -> str:
        return ""

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        _run(["podman", "image", "unmount", IMAGE], 300)


def test_container_image_runs_a_network(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (podman builds and network namespaces)")
    if shutil.which("podman") is None:
        pytest.skip("podman is not installed (apt-get install podman)")
    try:
        hosts.require(hosts.NEEDS, "the container network")
    except hosts.Unprivileged as exc:
        pytest.skip(str(exc))
    _base_image()
    _build()
    reason = Containers.unusable()
    runner: Containers | Chroot
    if reason is None:
        runner = Containers(tmp_path.name[-6:].replace("_", ""))
    else:
        print(f"{reason}; running the image's filesystem with chroot instead")
        runner = Chroot("")
    print("peers run as:", runner.how)

    setup = tmp_path / "setup"
    setup.mkdir()
    datas = [tmp_path / f"data{i}" for i in range(PEERS)]
    for path in (setup, *datas):
        path.mkdir(exist_ok=True)
        os.chown(path, UID, GID)
        path.chmod(0o700)
    tmp_path.chmod(0o755)  # the image's user must reach its directories
    topo = hosts.plan([f"peer{i}" for i in range(PEERS)])
    net = Devnet(tmp_path, "", [], [], PEERS, 2, {"hosts": topo.as_dict()})
    try:
        init = runner.init(setup, {"MESHPAY_SETUP_DIR": "/config", "MESHPAY_PEERS": str(PEERS),
                                   "MESHPAY_REPLICATION": "3", "MESHPAY_QUORUM": "2",
                                   "MESHPAY_NETWORK_NAME": "container-soak"})
        assert init.returncode == 0, _tail(init)
        genesis = genesis_file.load(setup / "genesis.json")
        assert len(genesis.committee) == PEERS
        hosts.ensure(net)
        for i in range(PEERS):
            runner.start(i, topo.namespace(f"peer{i}"), datas[i], setup, {
                "MESHPAY_GENESIS": "/config/genesis.json", "MESHPAY_PASSWORD_FILE": "/config/password",
                "MESHPAY_KEY_FILE": f"/config/peer{i}/peer.key",
                "MESHPAY_NETWORK__ADVERTISE_HOST": topo.address(i),
                "MESHPAY_NETWORK__SEEDS": json.dumps([f"{topo.address(0)}:{hosts.PEER_PORT}"] if i else []),
            })
        apis = [f"http://{topo.address(i)}:{hosts.API_PORT}" for i in range(PEERS)]

        def alive() -> bool:
            try:
                return all(httpx.get(f"{a}/v1/status", timeout=3).json()["members"]["alive"] == PEERS for a in apis)
            except (httpx.HTTPError, ValueError, KeyError):
                return False

        try:
            wait_for(alive, 300, "the three peers to run and see each other", interval=1.0)
        except AssertionError:
            raise AssertionError(runner.logs()) from None

        # A payment from the genesis treasury (made by the init script), through peer1, must settle.
        to = encode_address(SigningKey.generate().public)
        sent = wallet("send", "-a", "treasury", "--to", to, "--amount", "10", "--wait", "settled", "--timeout", "120",
                      "--json", env={"MESHPAY_WALLET_DIR": str(setup / "wallet"), "MESHPAY_PEER": apis[1],
                                     "MESHPAY_WALLET_PASSWORD_FILE": str(setup / "password"),
                                     "MESHPAY_GENESIS": str(setup / "genesis.json")})
        assert sent.code == 0, str(sent)
        assert sent.json()["status"] == "settled"
        ring = Ring(genesis.committee, genesis.replication, genesis.vnodes)
        by_id = {httpx.get(f"{a}/v1/status", timeout=10).json()["peer_id"]: a for a in apis}
        for owner in ring.owners(decode_address(to)):
            doc = httpx.get(f"{by_id[owner.hex()]}/v1/accounts/{to}", timeout=10).json()
            assert doc["balance"] == 10 * 10 ** genesis.decimals, doc
        print("settled and read back from every owner; peers ran as:", runner.how)
    finally:
        runner.stop()
        hosts.teardown(net)
        assert hosts.leftovers(net) == []
