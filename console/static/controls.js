/* Controls: peer actions, load runs, payments between demo wallets. Every action asks first. */
"use strict";
(() => {
  const { el, fill, badge } = MP;
  let latest = MP.initial;
  const VERB = { pause: "Pause", resume: "Resume", stop: "Stop", start: "Start", restart: "Restart", kill: "Kill" };
  const WHAT = {
    pause: "freezes its process (SIGSTOP): it stops answering, and the others will suspect it and then declare it dead",
    resume: "lets its process run again (SIGCONT)",
    stop: "stops it gracefully (SIGTERM): payments in flight get a few seconds to finish",
    start: "starts it on its data; it catches up with what it missed",
    restart: "stops it and starts it again on its data",
    kill: "kills its process at once (SIGKILL), as a crash would",
  };

  function options(select, items, keep) {
    const current = select.value;
    const values = items.map(([v]) => v).join("\n");
    if (select.dataset.values !== values) {
      fill(select, items.map(([value, label]) => el("option", { value }, label)));
      select.dataset.values = values;
      select.value = items.some(([v]) => v === current) ? current : keep ?? (items[0] ? items[0][0] : "");
    }
  }

  async function peerAction(peer, action) {
    const ok = await MP.confirm(`${VERB[action]} ${peer.name}?`, `This ${WHAT[action] || action}.`, VERB[action]);
    if (!ok) return;
    await MP.act("/api/control/peer", { peer: peer.url, action });
  }

  function peers(d) {
    fill("control-peers",
      el("thead", {}, el("tr", {}, ["peer", "state", "through", "actions"].map((h) => el("th", {}, h)))),
      el("tbody", {}, d.peers.map((p) => el("tr", { "data-peer": p.name },
        el("td", {}, el("b", {}, p.name), el("div", { class: "muted small mono" }, p.url)),
        el("td", {}, p.process ? badge(p.process) : badge(p.up ? "up" : p.up === false ? "down" : "unknown", p.up ? "ok" : p.up === false ? "down" : "unknown")),
        el("td", { class: "small muted" }, p.how),
        el("td", {}, p.actions.length ? p.actions.map((a) => el("button", {
          class: `small${["stop", "kill"].includes(a) ? " danger" : ""}`, "data-action": a,
          onclick: () => peerAction(p, a),
        }, VERB[a] || a)).flatMap((b) => [b, " "]) : el("span", { class: "muted small" }, "none"))))));
  }

  function log(d) {
    fill("action-log", d.log.length ? d.log.map((entry) => el("li", { class: entry.ok ? "" : "no" },
      el("b", {}, MP.clock(entry.at)), " ", badge(entry.ok ? "ok" : "failed"), " ", entry.message,
      entry.command ? el("span", { class: "cmd mono" }, entry.command) : null))
      : el("li", { class: "muted" }, "Nothing done yet."));
  }

  function load(d) {
    const l = d.load;
    const running = l && l.state === "running";
    document.getElementById("load-start").disabled = !l || running || d.read_only;
    document.getElementById("load-stop").disabled = !running || d.read_only;
    if (!l) {
      fill("load-status", el("span", { class: "muted" }, "Load runs need a devnet (start the console with --devnet DIR)."));
      return;
    }
    const elapsed = l.started_at ? ((l.ended_at || Date.now() / 1000) - l.started_at) : 0;
    const r = l.report;
    fill("load-status",
      el("div", {}, badge(l.state), l.state === "idle" ? " no load run yet" :
        ` ${l.rate}/s for ${l.duration} s over ${l.accounts} accounts · ${MP.duration(elapsed)} elapsed`),
      el("div", { class: "small", style: "margin-top:6px" }, `network now: ${MP.perSecond(d.rate_now)} settled (see Traffic)`),
      l.error ? el("div", { class: "no small" }, l.error) : null,
      r ? el("div", { class: "small", style: "margin-top:6px" },
        `${r.payments} payments, ${r.settled} settled, ${r.throughput.toFixed(1)}/s; to certified p50 ${MP.ms(r.certified_ms.p50)}, p99 ${MP.ms(r.certified_ms.p99)}`,
        Object.keys(r.failures).length ? `; failures ${JSON.stringify(r.failures)}` : "") : null,
      l.command ? el("div", { class: "muted small mono" }, l.command) : null);
  }

  function send(d) {
    const wallets = d.wallets.map((w) => [w.name, `${w.name} (${MP.short(w.address, 10)})`]);
    options(document.getElementById("send-from"), wallets);
    options(document.getElementById("send-to"), wallets, wallets[1] ? wallets[1][0] : undefined);
    options(document.getElementById("send-gateway"), d.peers.filter((p) => p.process).map((p) => [p.name, p.name]));
    document.getElementById("send-button").disabled = !d.wallets.length || d.read_only;
    if (!d.wallets.length) fill("send-result", el("span", { class: "muted" }, "Needs a devnet's demo wallets."));
  }

  function epochs(d) {
    const e = d.epochs;
    if (!e.available) {
      fill("epochs", el("div", { class: "notice", id: "epochs-unavailable" }, "Not available on this network: the peers' API reports no epochs, so there is nothing to propose or approve yet."));
      return;
    }
    const parts = [el("p", { id: "epoch-now" }, `Current epoch: ${e.text}. ${e.note}`),
      el("p", { class: "muted small" }, `Committee: ${d.committee.join(", ") || "?"}`)];
    if (d.committee_controls) {
      const add = el("button", { class: "primary", id: "committee-add", type: "button" }, "Add a peer");
      add.addEventListener("click", async () => {
        if (!(await MP.confirm("Add a peer to the committee?", "devnet add-peer: a new peer starts as an observer, then the committee proposes and approves the next epoch; its accounts move to it while payments go on.", "Add"))) return;
        fill("committee-result", el("span", { class: "muted" }, "changing the committee… (waits for the new owners' handoff)"));
        const result = await MP.act("/api/control/committee", { action: "add" });
        fill("committee-result", el("div", { id: "committee-outcome", class: result.ok ? "yes" : "no" }, result.message));
      });
      const before = document.getElementById("committee-remove-peer");
      const select = el("select", { id: "committee-remove-peer", "aria-label": "Peer to remove" });
      options(select, d.committee.map((n) => [n, n]), before ? before.value : undefined);
      const remove = el("button", { class: "danger", id: "committee-remove", type: "button" }, "Remove");
      remove.addEventListener("click", async () => {
        const name = select.value;
        if (!(await MP.confirm(`Remove ${name} from the committee?`, "devnet remove-peer: the next epoch leaves it out; it is stopped once its accounts have moved to their new owners.", "Remove"))) return;
        fill("committee-result", el("span", { class: "muted" }, "changing the committee… (waits for the new owners' handoff)"));
        const result = await MP.act("/api/control/committee", { action: "remove", peer: name });
        fill("committee-result", el("div", { id: "committee-outcome", class: result.ok ? "yes" : "no" }, result.message));
      });
      parts.push(el("div", { class: "inline" }, add, " ", select, " ", remove));
    } else {
      parts.push(el("p", { class: "muted small" }, "On a network that is not a devnet, each committee operator proposes and approves on their own peer: peer epoch propose / peer epoch approve."));
    }
    fill("epochs", ...parts);
  }

  function render(d) {
    latest = d;
    peers(d);
    log(d);
    load(d);
    send(d);
    epochs(d);
  }

  document.getElementById("load-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const rate = Number(document.getElementById("load-rate").value);
    const duration = Number(document.getElementById("load-duration").value);
    if (!(await MP.confirm("Start a load run?", `devnet bench at ${rate} payments/s for ${duration} s (it funds its own accounts from the demo wallets first).`, "Start"))) return;
    await MP.act("/api/control/load", { action: "start", rate, duration });
  });
  document.getElementById("load-stop").addEventListener("click", async () => {
    if (!(await MP.confirm("Stop the load run?", "The bench stops at once.", "Stop"))) return;
    await MP.act("/api/control/load", { action: "stop" });
  });
  document.getElementById("send-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = {
      from: document.getElementById("send-from").value, to: document.getElementById("send-to").value,
      amount: document.getElementById("send-amount").value.trim(), memo: document.getElementById("send-memo").value,
      gateway: document.getElementById("send-gateway").value,
    };
    if (!(await MP.confirm("Send this payment?", `${body.amount} from ${body.from} to ${body.to}, through ${body.gateway}.`, "Send"))) return;
    fill("send-result", el("span", { class: "muted" }, "sending… (the wallet waits until it is certified)"));
    const result = await MP.act("/api/control/send", body);
    fill("send-result", el("div", { id: "send-outcome", class: result.ok ? "yes" : "no" }, result.message),
      result.detail && result.detail.payment_id ? MP.link(`/payments/${result.detail.payment_id}`, "open the payment", { id: "send-link" }) : null);
  });

  render(latest);
  MP.live("controls", {}, render);
})();
