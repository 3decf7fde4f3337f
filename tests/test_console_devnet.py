"""The web console against a real devnet, started the way `make devnet` starts it.

One devnet of 5 peers (N = 4, W = 3, fsync off) serves the whole module: `devnet up` in the
foreground, which serves the console beside its live view and prints the console's URL. Then:

- contract tests: the console's own client (console/peerapi.py) reads every route it uses from
  every peer, so a peer API change that breaks the console fails here;
- browser tests in headless Chromium (Debian's `chromium`, driven by Playwright; skipped with the
  reason when either is missing): the network page lists every peer; a payment sent from the
  Controls page appears in the feed and its page shows W votes and the owners that applied it; a
  tampered certificate is shown invalid; pause/resume and a load run from the page; after `devnet
  kill peer3` the peer is down on the page at once, and the matrix shows every other peer suspecting
  it, within the failure-detection bound;
- the admin API through a console watching peers by URL: a peer with `api.admin_token` is stopped
  gracefully from the console, the others offer nothing;
- readability with 100 peers: a console over 100 synthetic peers (an httpx mock transport standing
  in for them, in this test only) pages and searches the network page.

Screenshots of every page go to tests/artifacts/console/ (ignored by git).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from console.peerapi import ContractError, PeerApi, PeerRefused, Trace, owners_of
from console.server import Options, serve
from crypto.address import decode_address, encode_address
from crypto.keys import SigningKey
from crypto.messages import Certificate
from devnet import processes
from devnet.audit import configured_tokens
from devnet.layout import Devnet, free_ports
from gossip.membership import MembershipConfig
from peer import genesis as genesis_file
from peer.api_explore import ring_layout
from peer.genesis import Allocation, Genesis
from peer.ring import Ring

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "tests" / "artifacts" / "console"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PEERS, N, W = 5, 4, 3
ADMIN_TOKEN = "console-test-admin-token-0123456789"
UI_TIMEOUT = 30_000  # ms: generous, the machine is shared


def devnet_cmd(root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "devnet", *args, "--dir", str(root)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


# ---- the devnet, as `make devnet` starts it -----------------------------------------------------------------
@dataclass
class Net:
    root: Path
    url: str  # the console's
    proc: subprocess.Popen[str]
    output: list[str]

    @property
    def devnet(self) -> Devnet:
        return Devnet.load(self.root)

    def api(self, path: str, **params: str) -> dict[str, Any]:
        response = httpx.get(self.url.rstrip("/") + path, params=params, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()


def _kill_leftovers(root: Path) -> None:
    """Any process whose command line names this devnet (peers, console) is killed by its pid."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(root) in cmd:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    root = tmp_path_factory.mktemp("console") / "net"
    # `make devnet` runs `devnet up` in the foreground: it prints the console's URL and serves it
    # beside the live view until Ctrl-C.
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^devnet:.*\n\t\$\(VENV\)/bin/devnet up ", makefile, re.M), "make devnet no longer runs devnet up"
    proc = subprocess.Popen([sys.executable, "-m", "devnet", "up", "--dir", str(root), "--peers", str(PEERS),
                             "--wallets", "4", "--no-fsync"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, cwd=REPO, start_new_session=True,
                            # every peer gets an admin token (peers inherit the environment of `devnet up`)
                            env={**os.environ, "COLUMNS": "200", "MESHPAY_API__ADMIN_TOKEN": ADMIN_TOKEN})
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def drain() -> None:  # keep reading: a full pipe would block the live view
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=drain, daemon=True).start()
    try:
        url = None
        deadline = time.monotonic() + 150
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(queue.Empty):
                line = lines.get(timeout=0.5)
                output.append(line)
                found = re.search(r"web console: (http://127\.0\.0\.1:\d+/)", line)
                url = found.group(1) if found else None
        assert url, "devnet up printed no console URL:\n" + "".join(output[-40:])
        yield Net(root, url, proc, output)
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does: stop the peers and the console
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        devnet_cmd(root, "down", timeout=60)
        _kill_leftovers(root)


# ---- contract: what the console reads from the peers -------------------------------------------------------
async def test_every_route_the_console_reads_parses_at_every_peer(net: Net) -> None:
    devnet = net.devnet
    async with httpx.AsyncClient(timeout=30) as http:
        sent = (await http.post(net.url + "api/control/send", headers={"X-Console": "1"},
                                json={"from": "demo2", "to": "demo3", "amount": "3.00", "gateway": "peer0"})).json()
        assert sent["ok"], sent
        pid = sent["detail"]["payment_id"]
        sender, recipient = devnet.wallets[2].address, devnet.wallets[3].address
        genesis = None
        tokens = configured_tokens(devnet)
        for entry in devnet.peers:
            api = PeerApi(http, entry.api, audit_headers={"Authorization": f"Bearer {tokens[entry.name]}"})
            status = await api.status()
            assert status.peer_id == entry.peer_id and status.replication == N and status.quorum == W
            members = await api.members()
            assert {m.peer_id for m in members} == {p.peer_id for p in devnet.peers}
            assert [m.is_self for m in members].count(True) == 1
            genesis = await api.genesis()
            assert genesis.network_id.hex() == status.network_id
            sample = await api.metrics()
            assert sample.queues and sample.http
            ring = await api.ring()
            assert ring.committee == [p.hex() for p in genesis.committee] and sum(ring.shares) == pytest.approx(N)
            assert (await api.audit_accounts()).rows
            # the payment as this peer saw it, and in its feed (a peer that owns neither side and was
            # not its gateway relays the certificate without keeping it)
            ring = Ring(genesis.committee, N, genesis.vnodes)
            me = bytes.fromhex(entry.peer_id)
            owns = {"sender": me in ring.owners(decode_address(sender)),
                    "recipient": me in ring.owners(decode_address(recipient))}
            involved = owns["sender"] or owns["recipient"] or entry.name == "peer0"
            trace = await wait_trace(api, pid) if involved else await api.trace(pid)
            assert trace.known == involved and (trace.owns_sender, trace.owns_recipient) == (owns["sender"], owns["recipient"])
            if involved:
                assert trace.order is not None and trace.order.sender == sender and trace.cert_cbor is not None
                assert pid in {i.payment_id for i in (await api.recent(0)).items}
            if entry.name == "peer0":  # the gateway: votes with arrival times
                assert trace.gateway is not None and len(trace.gateway.votes) >= W
                assert all(after is not None and after >= 0 for _, after in trace.gateway.votes)
                assert (await api.payment(pid)).order.payment_id == pid
            if owns["sender"]:
                assert trace.applied_debit or (await wait_trace(api, pid, applied=True)).applied_debit
                assert await api.debit(sender, trace.order.seq) == pid
                view = await api.account(sender)
                assert view.next_seq >= trace.order.seq + 1 and len(view.owners) == N
                history = await api.history(sender)
                assert pid in {e.payment_id for e in history.entries}
            else:
                with pytest.raises(PeerRefused) as refused:
                    await api.account(sender)
                assert len(owners_of(refused.value)) == N
            with pytest.raises(PeerRefused) as admin:
                await api.admin_info()  # no token
            assert admin.value.code == "unauthorized" and admin.value.status == 401
            info = await PeerApi(http, entry.api, admin_token=ADMIN_TOKEN).admin_info()
            assert info.peer_id == entry.peer_id and info.actions == ["stop", "restart", "pause", "resume"] and info.pid == processes.live_pid(devnet, entry)
    # the console itself: every topic answers, and no peer broke its contract
    network = net.api("/api/network")
    assert {r["name"] for r in network["rows"]} == {p.name for p in devnet.peers}
    assert all(r["contract"] == [] for r in network["rows"])
    for topic, params in (("traffic", {}), ("feed", {}), ("alerts", {}), ("accounts", {}), ("controls", {}),
                          ("account", {"address": sender}), ("payment", {"id": pid})):
        body = net.api(f"/api/{topic}", **params)
        assert "_nav" in body, topic
    # the search box: a payment id, an address, or a sender and its sequence number
    seq = net.api("/api/payment", id=pid)["order"]["seq"]
    for query, target in ((pid, f"/payments/{pid}"), (sender, f"/accounts/{sender}"),
                          (f"{sender} {seq}", f"/payments/{pid}"), (f"{sender}:{seq}", f"/payments/{pid}")):
        found = httpx.get(net.url + "search", params={"q": query}, timeout=30)
        assert found.status_code == 303 and found.headers["location"] == target, (query, found.status_code)
    unknown = httpx.get(net.url + "search", params={"q": f"{sender} {seq + 50}"}, timeout=30)
    assert unknown.status_code == 200 and "reports a payment with sequence number" in unknown.text
    # actions need the console's header, so other web pages cannot trigger them
    refused_action = httpx.post(net.url + "api/control/peer", json={"peer": devnet.peers[0].api, "action": "kill"})
    assert refused_action.status_code == 403
    assert processes.is_running(devnet.peers[0], devnet)


async def wait_trace(api: PeerApi, pid: str, *, applied: bool = False) -> Trace:
    """The peer's trace once it knows the payment (and, with `applied`, has applied the debit)."""
    with trio.fail_after(20):
        while True:
            trace = await api.trace(pid)
            if trace.known and (trace.applied_debit or not applied):
                return trace
            await trio.sleep(0.2)


def test_a_changed_api_answer_is_reported_as_a_contract_break() -> None:
    """The console names the route and the field when a peer's answer changes shape."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"peers": [{"peer_id": "ab", "state": "alive"}]})

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            with pytest.raises(ContractError, match=r"/v1/peers.*peers\[0\]\.self"):
                await PeerApi(http, "http://x").members()

    trio.run(main)


# ---- the browser ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium here: install Debian's chromium package (apt-get install -y chromium) to run "
                    "the console's browser tests")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("Playwright for Python is not installed (pip install -e '.[test]')")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(UI_TIMEOUT)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield pg
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


def shot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def confirm(page: Any) -> None:
    page.locator("#confirm[open]").wait_for()
    page.click("#confirm-ok")


def test_network_page_lists_every_peer(net: Net, page: Any) -> None:
    page.goto(net.url + "network")
    for entry in net.devnet.peers:
        page.locator(f'#peers tr[data-peer="{entry.name}"][data-verdict="alive"]').wait_for()
    assert page.locator("#peers tr[data-peer]").count() == PEERS
    page.locator("#ring-shares tr").first.wait_for()
    assert page.locator("#ring-shares tr").count() == PEERS
    card = page.inner_text("#epoch-card")
    assert "not available on this network" not in card and "0" in card, card
    shot(page, "network")


def test_a_payment_sent_from_the_page_shows_in_the_feed_with_its_votes_and_owners(net: Net, page: Any) -> None:
    page.goto(net.url + "controls")
    page.locator("#send-from option").first.wait_for(state="attached")
    page.select_option("#send-from", "demo0")
    page.select_option("#send-to", "demo1")
    page.select_option("#send-gateway", "peer1")
    page.fill("#send-amount", "1.25")
    page.fill("#send-memo", "from the console")
    page.click("#send-button")
    confirm(page)
    page.locator("#send-outcome.yes").wait_for(timeout=90_000)
    href = page.get_attribute("#send-link", "href")
    pid = href.rsplit("/", 1)[1]
    page.locator("#action-log li", has_text=pid).wait_for()
    shot(page, "controls")
    page.goto(net.url + "payments")
    page.locator(f'#feed tr[data-payment="{pid}"]').wait_for()
    page.locator(f'#feed tr[data-payment="{pid}"] .b-settled').wait_for()
    shot(page, "payments")
    page.click(f'#feed tr[data-payment="{pid}"] a[href="/payments/{pid}"]')
    page.locator("#verdict-box.valid").wait_for()
    assert page.inner_text("#gateway-name") == "peer1"
    in_certificate = page.locator("#payment-votes tbody tr").filter(has=page.locator("td:nth-child(4) .yes"))
    assert in_certificate.count() == W
    assert all("+" in t for t in page.locator("#payment-votes tbody td:nth-child(3)").all_inner_texts())
    for table in ("#debit-owners", "#credit-owners"):  # every owner applied its side once settled
        page.locator(f'{table} tbody tr[data-applied="true"]').nth(N - 1).wait_for()
        assert page.locator(f"{table} tbody tr").count() == N
    shot(page, "payment")
    demo0 = net.devnet.wallets[0].address
    page.goto(net.url + f"accounts/{demo0}")
    page.locator('#account-owners tr[data-owner]').nth(N - 1).wait_for()
    page.locator("#account-history a", has_text=pid[:16]).wait_for()
    shot(page, "account")
    page.goto(net.url + "accounts")
    page.locator(f'#accounts tr[data-account="{demo0}"]').wait_for()
    shot(page, "accounts")


def test_a_tampered_certificate_is_shown_invalid(net: Net, page: Any) -> None:
    feed = net.api("/api/feed")
    pid = feed["rows"][0]["payment_id"]
    payment = net.api("/api/payment", id=pid)
    cbor = payment["certificates"][0][0]
    cert = Certificate.decode(bytes.fromhex(cbor))
    forged = bytearray(cert.votes[0].sig)
    forged[0] ^= 1
    tampered = Certificate(cert.order, (replace(cert.votes[0], sig=bytes(forged)), *cert.votes[1:]))
    page.goto(net.url + "verify")
    page.fill("#certificate", tampered.encode().hex())
    page.click("#verify-button")
    page.locator("#verdict-box.invalid").wait_for()
    assert "invalid signature" in page.inner_text("#verdict-reason")
    shot(page, "verify-invalid")
    page.fill("#certificate", cbor)
    page.click("#verify-button")
    page.locator("#verdict-box.valid").wait_for()
    shot(page, "verify-valid")
    page.fill("form.search input", "not-a-payment")
    page.press("form.search input", "Enter")
    page.locator("#search-message", has_text="neither a payment id").wait_for()
    shot(page, "search")


def test_pause_and_resume_a_peer_from_the_page(net: Net, page: Any) -> None:
    page.goto(net.url + "controls")
    page.click('#control-peers tr[data-peer="peer4"] button[data-action="pause"]')
    confirm(page)
    page.locator('#control-peers tr[data-peer="peer4"] .b-paused').wait_for(timeout=60_000)
    page.locator("#action-log li", has_text="peer4 paused").wait_for()
    page.click('#control-peers tr[data-peer="peer4"] button[data-action="resume"]')
    confirm(page)
    page.locator('#control-peers tr[data-peer="peer4"] .b-running').wait_for(timeout=60_000)
    page.locator("#action-log li", has_text="peer4 resumed").wait_for()
    entry = net.devnet.peer("peer4")
    assert processes.is_running(entry, net.devnet)
    wait_for(lambda: httpx.get(entry.api + "/v1/status", timeout=5).status_code == 200, 30, "peer4 to answer again")


def test_a_load_run_starts_and_stops_from_the_page_and_traffic_shows_the_payments(net: Net, page: Any) -> None:
    page.goto(net.url + "controls")
    page.fill("#load-rate", "20")
    page.fill("#load-duration", "60")
    page.click("#load-start")
    confirm(page)
    page.locator("#load-status .b-running").wait_for()
    assert "devnet bench --rate 20 --duration 60" in page.inner_text("#load-status")
    page.click("#load-stop")
    confirm(page)
    page.locator("#load-status .b-stopped").wait_for(timeout=60_000)
    page.locator("#action-log li", has_text="load run stopping").wait_for()
    # the payments of the tests before show on the Traffic page
    page.goto(net.url + "traffic")
    traffic = wait_for(lambda: (t := net.api("/api/traffic")) and max(v or 0 for v in t["series"]["settled"]) > 0 and t,
                       30, "settled payments on the traffic page")
    assert max(v or 0 for v in traffic["series"]["certified_p99"]) > 0
    page.locator("#traffic-table tbody tr").nth(PEERS - 1).wait_for()
    shot(page, "traffic")


def test_a_peer_is_added_to_the_committee_from_the_page(net: Net, page: Any) -> None:
    """Issue 12: with epochs, the console proposes and approves adding a peer (devnet add-peer)."""
    before = {p.name for p in Devnet.load(net.devnet.root).peers}
    page.goto(net.url + "controls")
    page.locator("#epoch-now").wait_for()
    assert "Current epoch: 0" in page.inner_text("#epoch-now")
    page.click("#committee-add")
    confirm(page)
    page.locator("#committee-outcome.yes").wait_for(timeout=240_000)
    assert "epoch 1" in page.inner_text("#committee-outcome")
    added = {p.name for p in Devnet.load(net.devnet.root).peers} - before
    assert len(added) == 1
    name = added.pop()
    # Every peer is in epoch 1, and the newcomer is a committee member that owns accounts.
    for entry in Devnet.load(net.devnet.root).peers:
        doc = httpx.get(entry.api + "/v1/status", timeout=5).json()
        assert doc["epoch"] == 1, (entry.name, doc["epoch"])
        if entry.name == name:
            assert doc["committee_member"] and doc["owned_accounts"] > 0
    page.locator("#action-log li", has_text="epoch 1: committee").wait_for()
    page.locator("#epoch-now", has_text="Current epoch: 1").wait_for(timeout=30_000)
    shot(page, "controls-committee")
    # The ring drawn and the shares compared follow the new committee: no "ring share" alert.
    wait_for(lambda: (doc := net.api("/api/network")).get("ring") and len(doc["ring"]["ids"]) == PEERS + 1,
             30, "the console's ring to follow the new committee")
    assert net.api("/api/network")["network"]["committee"] == PEERS + 1
    assert not [a for a in net.api("/api/alerts")["alerts"] if a["kind"] == "ring share"]


def test_a_killed_peer_turns_down_at_once_and_suspected_everywhere_within_the_detection_bound(net: Net, page: Any) -> None:
    page.goto(net.url + "network")
    page.locator('#peers tr[data-peer="peer3"][data-verdict="alive"]').wait_for()
    start = time.monotonic()
    killed = devnet_cmd(net.root, "kill", "peer3")
    assert killed.returncode == 0, killed.stderr
    returned = time.monotonic() - start
    peers = len(Devnet.load(net.root).peers)  # PEERS, plus any the committee test added
    bound = MembershipConfig().detection_bound(peers)
    # the console cannot reach it: down at its next poll
    page.locator('#peers tr[data-peer="peer3"][data-verdict="down"]').wait_for(timeout=bound * 1000)
    down_after = time.monotonic() - start
    # and the matrix shows every other peer's failure detector at work: suspect, then dead
    cells = page.locator('#peers tr[data-peer="peer3"] .cells')
    wait_for(lambda: re.fullmatch(rf"views: [sd]{{{peers - 1}}}", cells.get_attribute("aria-label") or ""),
             max(1.0, bound - (time.monotonic() - start)), "every other peer suspecting peer3 on the page")
    print(f"`devnet kill peer3` returned after {returned:.1f} s; peer3 down on the page {down_after:.1f} s and suspected "
          f"or dead at every other peer {time.monotonic() - start:.1f} s after it began (detection bound {bound:.0f} s)")
    shot(page, "network-peer-down")
    page.goto(net.url + "alerts")
    page.locator('#alerts tr[data-kind="peer down"][data-subject="peer3"]').wait_for()
    page.locator("#audit .b-ok").wait_for(timeout=60_000)
    shot(page, "alerts")


# ---- a console watching peers by URL, with the admin API -----------------------------------------------------
class InProcessConsole:
    """The console served from a thread (its own trio loop), for tests that watch other sources."""

    def __init__(self, options: Options, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.options, self.transport = options, transport
        self.ready = threading.Event()
        self.url = ""
        self._scope: trio.CancelScope | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            self._scope = scope
            async with trio.open_nursery() as nursery:
                self.url = await nursery.start(partial(serve, self.options, transport=self.transport))
                self.ready.set()

    def __enter__(self) -> InProcessConsole:
        self._thread.start()
        assert self.ready.wait(30), "the console did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._scope is not None and self._token is not None
        trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(15)

    def get(self, path: str, **params: str) -> dict[str, Any]:
        response = httpx.get(self.url.rstrip("/") + path, params=params, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()


def test_a_peer_is_stopped_gracefully_through_its_admin_api_from_a_console(net: Net) -> None:
    """A console watching the peers by URL (not as a devnet) controls them only through the admin API,
    and only the peers the operator named: a peer it found through another's list gets no token."""
    devnet = net.devnet
    victim = devnet.peer("peer4")
    for token in (None, "wrong-token-wrong-token"):
        headers = {"authorization": f"Bearer {token}"} if token else {}
        answer = httpx.post(victim.api + "/v1/admin/stop", headers=headers, timeout=10)
        assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
    options = Options(peers=[devnet.peers[0].api, victim.api], port=free_ports(1)[0], admin_token=ADMIN_TOKEN)
    found = devnet.peer("peer2").api
    with InProcessConsole(options) as console:
        def offered() -> dict[str, list[str]] | None:
            peers = {p["url"]: p["actions"] for p in console.get("/api/controls")["peers"]}
            return peers if peers.get(victim.api) and found in peers else None

        actions = wait_for(offered, 30, "the console to reach peer4's admin API and find peer2")
        assert actions[victim.api] == ["stop", "restart", "pause", "resume"]
        assert actions[found] == [], "a found peer must not be controlled (no token is sent to it)"

        def act(action: str) -> None:
            result = httpx.post(console.url + "api/control/peer", headers={"X-Console": "1"},
                                json={"peer": victim.api, "action": action}, timeout=30).json()
            assert result["ok"], result

        def status() -> dict[str, Any]:
            return httpx.get(victim.api + "/v1/status", timeout=5).json()

        # Pause: no new payments (503 paused), resume: taken again.
        act("pause")
        assert status()["accepting"] is False
        refused = httpx.post(victim.api + "/v1/payments", json={"order": "00"}, timeout=10)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "paused", refused.text
        act("resume")
        assert status()["accepting"] is True
        # Restart: a graceful stop, then the same `peer run` again (the same pid: exec) on its data.
        pid, before = processes.live_pid(Devnet.load(net.root), victim), status()["uptime_seconds"]
        act("restart")

        def restarted() -> bool:
            try:
                return status()["uptime_seconds"] < before
            except (httpx.HTTPError, ValueError, KeyError):
                return False

        wait_for(restarted, 60, "peer4 to come back after its restart")
        assert processes.live_pid(Devnet.load(net.root), victim) == pid
        # The console saw it go and come back: it checks the admin API again before offering it.
        wait_for(lambda: (o := offered()) and o.get(victim.api) == ["stop", "restart", "pause", "resume"], 30,
                 "the console to offer peer4's admin actions again")
        act("stop")
        wait_for(lambda: not processes.is_running(victim, Devnet.load(net.root)), 30, "peer4 to exit")
        assert "stopped" in processes.tail(Devnet.load(net.root), "peer4", 5)  # the graceful path, not a crash


# ---- 100 peers, and account states a real devnet does not produce on demand --------------------------------
class FakeNetwork:
    """100 synthetic peers answering the routes the console reads: 5 unreachable, one seen suspect by
    some; one account whose owners are locked to two different orders (frozen), one whose owners
    report different balances. Only for these display tests: every real route is covered above."""

    def __init__(self, size: int = 100) -> None:
        self.keys = [SigningKey.generate().public for _ in range(size)]
        self.ring = Ring(self.keys, N, 8)
        self.down = set(range(size - 5, size))
        # The two flagged accounts have every owner up (one of them down would show as an error row
        # instead of the disagreement the test looks for: a random failure one run in five or so).
        up = set(self.keys[:size - 5])
        self.frozen, self.split = self._account_owned_by(up), self._account_owned_by(up)
        self.genesis = Genesis("synthetic", tuple(self.keys), N, W, 8, 2,
                               (Allocation(self.frozen, 10_000), Allocation(self.split, 10_000)), b"\x05" * 16).validate()
        self.layout = ring_layout(self.ring)
        self.urls = [f"http://10.9.{i // 200}.{i % 200 + 1}:8000" for i in range(size)]
        self.by_host = {httpx.URL(u).host: i for i, u in enumerate(self.urls)}
        self.index = {pid: i for i, pid in enumerate(self.keys)}
        self.answers: dict[tuple[int, str], bytes] = {}  # encoded once: this process also drives the browser

    def _account_owned_by(self, peers: set[bytes]) -> bytes:
        while True:
            account = SigningKey.generate().public
            if set(self.ring.owners(account)) <= peers:
                return account

    def _json(self, i: int, path: str, build: Callable[[], Any]) -> httpx.Response:
        body = self.answers.get((i, path))
        if body is None:
            body = self.answers[(i, path)] = json.dumps(build()).encode()
        return httpx.Response(200, content=body, headers={"content-type": "application/json"})

    def members(self, me: int) -> list[dict[str, Any]]:
        rows = []
        for i, pid in enumerate(self.keys):
            state = "dead" if i in self.down else ("suspect" if i == 7 and me % 2 else "alive")
            rows.append({"peer_id": pid.hex(), "state": state, "self": i == me, "host": "10.9.0.1", "port": 7000 + i,
                         "api": self.urls[i], "incarnation": 0, "committee": True})
        return rows

    def account(self, me: int, address: str) -> httpx.Response:
        account = decode_address(address)
        owners = self.ring.owners(account)
        refs = [{"peer_id": o.hex(), "api": self.urls[self.index[o]], "state": "alive"} for o in owners]
        if self.keys[me] not in owners:
            return httpx.Response(421, json={"error": {"code": "not_owner", "message": "ask its owners", "owners": refs}})
        rank = owners.index(self.keys[me])
        balance, pending = 10_000, None
        if account == self.frozen:  # two owners locked to one order, two to another: no quorum of 3 either way
            pending = {"seq": 0, "payment_id": ("aa" if rank < 2 else "bb") * 32}
        if account == self.split and rank == 0:
            balance = 9_000
        return httpx.Response(200, json={"address": address, "peer_id": self.keys[me].hex(), "balance": balance,
                                         "next_seq": 0, "credits": 0, "history_length": 0, "pending": pending,
                                         "decimals": 2, "owners": refs})

    def handler(self, request: httpx.Request) -> httpx.Response:
        i = self.by_host.get(request.url.host)
        if i is None or i in self.down:
            raise httpx.ConnectError("connection refused", request=request)
        pid, path = self.keys[i].hex(), request.url.path
        if path == "/v1/status":
            return self._json(i, path, lambda: {
                "peer_id": pid, "network_id": self.genesis.network_id.hex(), "network": "synthetic", "version": "0.1.0",
                "uptime_seconds": 3600.0 + i, "accepting": True, "committee_member": True, "committee_size": 100,
                "replication": N, "quorum": W, "ring_share": self.layout["shares"][i], "incarnation": 0,
                "members": {"alive": 95, "suspect": 0, "dead": 5, "left": 0}, "peer_port": 7000 + i,
                "owned_accounts": 0, "queues": {"group_commit": 0, "gateway_in_flight": 0, "inbound": 0, "waiting_requests": 0},
                "counters": {}})
        if path == "/v1/peers":
            return self._json(i, path, lambda: {"peers": self.members(i)})
        if path == "/v1/genesis":
            return self._json(i, path, lambda: genesis_file.to_json(self.genesis))
        if path == "/metrics":
            return httpx.Response(200, text="".join(f"# TYPE {f} counter\n" for f in (
                "meshpay_payments", "meshpay_payment_latency_seconds", "meshpay_queue_depth", "meshpay_transport_bytes",
                "meshpay_http_requests")))
        if path == "/v1/explore/recent":
            return httpx.Response(200, json={"peer_id": pid, "cursor": 0, "latest": 0, "oldest": 1, "items": []})
        if path == "/v1/explore/ring":
            return self._json(i, path, lambda: {"peer_id": pid, **self.layout})
        if path == "/v1/audit/accounts":
            return httpx.Response(200, json={"peer_id": pid, "accounts": [], "next_after": None})
        if path.startswith("/v1/accounts/") and path.endswith("/history"):
            return httpx.Response(200, json={"address": path.split("/")[3], "entries": [], "next_before": None})
        if path.startswith("/v1/accounts/"):
            return self.account(i, path.split("/")[3])
        return httpx.Response(404, json={"error": {"code": "not_found", "message": path}})


def test_100_peers_stay_readable_and_frozen_or_disagreeing_accounts_stand_out(page: Any) -> None:
    fake = FakeNetwork()
    # polled every 10 s (each peer once at once): 95 pollers share this process with the browser driver
    options = Options(peers=[fake.urls[0]], port=free_ports(1)[0], interval=10.0, audit_interval=2.0)
    with InProcessConsole(options, transport=httpx.MockTransport(fake.handler)) as console:
        def found_all() -> bool:
            rows = console.get("/api/network")["rows"]
            return len(rows) == 100 and sum(r["verdict"] == "alive" for r in rows) >= 94

        wait_for(found_all, 90, "the console to find all 100 peers", step=1.0)
        page.set_default_timeout(3 * UI_TIMEOUT)
        page.goto(console.url + "network")
        page.locator(".pager", has_text="100 in all").wait_for()
        assert page.locator("#peers tr[data-peer]").count() == 25  # one page
        assert page.locator('#peers tr[data-verdict="down"]').count() == 5  # the worst come first
        shot(page, "network-100-peers")
        page.click('#peers-pager button[aria-label="next page"]')
        page.locator(".pager", has_text="page 2 of 4").wait_for()
        page.fill("#peer-search", "10.9.0.43:")
        page.locator(".pager", has_text="1 in all").wait_for()
        assert page.locator("#peers tr[data-peer]").count() == 1
        page.fill("#peer-search", "suspect")
        page.locator('#peers tr[data-verdict="suspect"].disagree').first.wait_for()
        page.fill("#peer-search", "")
        page.select_option("#peer-size", "100")
        page.locator(".pager", has_text="page 1 of 1").wait_for()
        assert page.locator("#peers tr[data-peer]").count() == 100
        # accounts: the frozen one and the one whose owners disagree are flagged
        frozen, split = encode_address(fake.frozen), encode_address(fake.split)
        page.goto(console.url + "accounts")
        page.locator(f'#accounts tr[data-account="{frozen}"] .b-frozen', has_text="frozen at seq 0").wait_for()
        page.locator(f'#accounts tr[data-account="{split}"].disagree .b-disagree').wait_for()
        shot(page, "accounts-flagged")
        page.goto(console.url + f"accounts/{split}")
        page.locator("#account-owners tr.diff").wait_for()
        assert page.locator("#account-owners tr.diff").count() == 1  # the one owner that differs
        shot(page, "account-disagreeing")
        page.goto(console.url + "alerts")
        page.locator(f'#alerts tr[data-kind="frozen account"][data-subject="{frozen}"]').wait_for()
        assert page.locator('#alerts tr[data-kind="peer down"]').count() == 5
        shot(page, "alerts-100-peers")
