"""The deployment files (deploy/) parse, stay in sync with the peer's settings, and work.

What is checked without a container engine: the compose file and the Kubernetes manifests parse;
every MESHPAY_* variable they set is a real peer setting (or one the entrypoint/init script reads);
ports and probes match the image's peer.toml and the API's routes; the StatefulSet's seeds name its
headless service; the disruption budget never takes more peers than N - W; the entrypoint picks the
key and advertise address as documented; the compose init script makes a valid network. Building
the image and running a network from it needs podman (or docker) with an engine: that test is
marked soak and skips with the reason when none is usable.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from peer import config as peer_config
from peer import genesis as genesis_file
from peer.genesis import DEFAULT_QUORUM, DEFAULT_REPLICATION

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
SCRIPTS = (DEPLOY / "entrypoint.sh", DEPLOY / "compose-init.sh")
VENV_BIN = Path(sys.executable).parent


def _settings_paths() -> set[tuple[str, ...]]:
    """Every settable path of the peer's configuration, as the environment names it."""
    paths: set[tuple[str, ...]] = set()
    for name, field in peer_config.PeerSettings.model_fields.items():
        annotation = field.annotation
        sub = getattr(annotation, "model_fields", None) if isinstance(annotation, type) else None
        if sub:
            paths.update((name, inner) for inner in sub)
        else:
            paths.add((name,))
    return paths


def _script_variables() -> set[str]:
    """MESHPAY_* variables the entrypoint and init script read themselves."""
    names: set[str] = set()
    for script in SCRIPTS:
        names.update(re.findall(r"\$\{?(MESHPAY_[A-Z_]+)", script.read_text()))
    return names


def _check_env(env: dict[str, str], where: str) -> None:
    settings = _settings_paths()
    own = _script_variables()
    for name in env:
        assert name.startswith("MESHPAY_"), f"{where}: {name} is not a meshpay variable"
        if name in own:
            continue
        path = tuple(part.lower() for part in name.removeprefix("MESHPAY_").split("__"))
        assert path in settings, f"{where}: {name} is not a peer setting (no {'.'.join(path)})"


def _k8s() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "k8s" / "meshpay.yaml").read_text()) if doc]


def _image_config() -> Any:
    return peer_config.load(DEPLOY / "peer.toml")


def test_compose_file_parses_and_uses_real_settings() -> None:
    doc = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = doc["services"]
    peers = {name: svc for name, svc in services.items() if name.startswith("peer")}
    assert len(peers) >= DEFAULT_REPLICATION, "fewer peers than owners per account"
    api_port = _image_config().api.port
    for name, svc in peers.items():
        _check_env(svc["environment"], f"compose {name}")
        assert svc["depends_on"]["init"]["condition"] == "service_completed_successfully"
        assert any(v.endswith(":/data") for v in svc["volumes"]), f"{name} has no data volume"
        assert all(p.endswith(f":{api_port}") for p in svc["ports"]), f"{name} publishes the wrong port"
        assert "/v1/status" in " ".join(svc["healthcheck"]["test"])
        key = svc["environment"]["MESHPAY_KEY_FILE"]
        assert key == f"/setup/{name}/peer.key"
    seeds = json.loads(peers["peer1"]["environment"]["MESHPAY_NETWORK__SEEDS"])
    assert all(s.split(":")[0] in services for s in seeds), "a seed names no service"
    assert all(int(s.split(":")[1]) == _image_config().network.listen_port for s in seeds)
    init = services["init"]
    assert Path(DEPLOY, init["volumes"][1].split(":")[0].removeprefix("./")).exists()
    _check_env(init["environment"], "compose init")


def test_kubernetes_manifests_are_consistent() -> None:
    docs = {d["kind"]: d for d in _k8s()}
    assert set(docs) >= {"Service", "StatefulSet", "PodDisruptionBudget"}
    services = [d for d in _k8s() if d["kind"] == "Service"]
    headless = next(s for s in services if s["spec"].get("clusterIP") == "None")
    sts = docs["StatefulSet"]
    assert sts["spec"]["serviceName"] == headless["metadata"]["name"]
    assert sts["spec"]["volumeClaimTemplates"], "every peer needs its own volume for RocksDB"
    pod = sts["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    _check_env(env, "StatefulSet")
    config = _image_config()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"p2p": config.network.listen_port, "api": config.api.port}
    api_source = (ROOT / "peer" / "api.py").read_text()
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["port"] == "api" and f'"{get["path"]}"' in api_source, f"{probe} hits no API route"
    name, domain = sts["metadata"]["name"], env["MESHPAY_PEER_DOMAIN"]
    assert domain == headless["metadata"]["name"]
    for seed in json.loads(env["MESHPAY_NETWORK__SEEDS"]):
        host, port = peer_config.parse_hostport(seed)
        assert re.fullmatch(rf"{name}-\d+\.{domain}", host) and port == config.network.listen_port
        assert int(host.split(".")[0].rsplit("-", 1)[1]) < sts["spec"]["replicas"]
    assert sts["spec"]["replicas"] >= DEFAULT_REPLICATION
    budget = docs["PodDisruptionBudget"]["spec"]
    assert budget["maxUnavailable"] <= DEFAULT_REPLICATION - DEFAULT_QUORUM, \
        "a drain could take two owners of an account at once"
    assert budget["selector"] == sts["spec"]["selector"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/data", "/keys", "/config"} <= mounts
    assert Path(config.data_dir).is_relative_to("/data") and Path(config.key_file).parent == Path("/keys")
    assert Path(config.genesis).parent == Path("/config")


def test_containerfile_copies_what_exists_and_runs_the_entrypoint() -> None:
    text = (DEPLOY / "Containerfile").read_text()
    for src, _dst in re.findall(r"^COPY (?!--from)(\S+) (\S+)$", text, re.M):
        assert (ROOT / src).exists(), f"Containerfile copies {src}, which does not exist"
    assert "deploy/entrypoint.sh" in text and "deploy/peer.toml" in text
    assert "/v1/status" in text and "VOLUME" in text
    ignored = (ROOT / ".containerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
    for script in SCRIPTS:
        assert os.access(script, os.X_OK), f"{script} is not executable"
        subprocess.run(["sh", "-n", str(script)], check=True)


def _fake_peer(tmp_path: Path) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "peer"
    fake.write_text("#!/bin/sh\necho \"key=${MESHPAY_KEY_FILE:-} advertise=$MESHPAY_NETWORK__ADVERTISE_HOST args=$*\"\n")
    fake.chmod(0o755)
    return bindir


@pytest.mark.parametrize("hostname,env,expect", [
    ("meshpay-3", {"MESHPAY_PEER_DOMAIN": "meshpay-peers"},
     "key=/keys/peer-3.key advertise=meshpay-3.meshpay-peers"),
    ("peer1", {"MESHPAY_KEY_FILE": "/setup/peer1/peer.key"}, "key=/setup/peer1/peer.key advertise=peer1"),
    ("peer1", {"MESHPAY_KEY_FILE": "/k", "MESHPAY_NETWORK__ADVERTISE_HOST": "10.0.0.7"},
     "key=/k advertise=10.0.0.7"),
])
def test_entrypoint_picks_key_and_advertise_address(tmp_path: Path, hostname: str, env: dict[str, str],
                                                    expect: str) -> None:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        pytest.skip("needs root and unshare to give the entrypoint its own hostname")
    keys = Path("/keys")
    made = not keys.exists()
    if made:
        keys.mkdir()
    try:
        (keys / "peer-3.key").touch()
        script = f"hostname {hostname} && exec sh {DEPLOY / 'entrypoint.sh'} --extra"
        run_env = {"PATH": f"{_fake_peer(tmp_path)}:/usr/bin:/bin", **env}
        out = subprocess.run(["unshare", "--uts", "sh", "-c", script], env=run_env, capture_output=True,
                             text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"{expect} args=run --config /etc/meshpay/peer.toml --extra"
    finally:
        (keys / "peer-3.key").unlink(missing_ok=True)
        if made:
            keys.rmdir()


@pytest.mark.soak  # about 15 CLI start-ups: ~15 s on a quiet machine, a minute on a loaded one
def test_compose_init_makes_keys_and_a_genesis_of_those_peers(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}", "MESHPAY_SETUP_DIR": str(tmp_path),
           "MESHPAY_PEERS": "4", "MESHPAY_NETWORK_NAME": "compose-test"}
    run = subprocess.run(["sh", str(DEPLOY / "compose-init.sh")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    genesis = genesis_file.load(tmp_path / "genesis.json")
    assert genesis.name == "compose-test" and len(genesis.committee) == 4
    ids = set()
    for i in range(4):
        conf = peer_config.load(tmp_path / f"peer{i}" / "peer.toml")
        assert conf.genesis.read_bytes() == (tmp_path / "genesis.json").read_bytes()
        ids.add(subprocess.run([str(VENV_BIN / "peer"), "id", "--config", str(tmp_path / f"peer{i}" / "peer.toml")],
                               capture_output=True, text=True, check=True).stdout.strip())
        assert (tmp_path / f"peer{i}" / "peer.key").stat().st_mode & 0o077 == 0
    assert ids == {m.hex() for m in genesis.committee}
    assert genesis.total_supply == 1_000_000 * 10 ** genesis.decimals
    again = subprocess.run(["sh", str(DEPLOY / "compose-init.sh")], env=env, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0 and "keeping it" in again.stdout
    assert genesis_file.load(tmp_path / "genesis.json").network_id == genesis.network_id
