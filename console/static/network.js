/* Network page: summary, peers with the health matrix (filter, grouping, paging), the ring. */
"use strict";
(() => {
  const { el, fill, badge } = MP;
  const search = document.getElementById("peer-search");
  const group = document.getElementById("peer-group");
  const size = document.getElementById("peer-size");
  const view = { data: MP.initial, page: 0 };
  const color = (i) => `hsl(${(i * 137.508) % 360} 60% 52%)`;

  function card(label, value, note, attrs) {
    return el("div", { class: "card", ...(attrs || {}) }, el("div", { class: "label" }, label),
      el("div", { class: "value" }, value), note ? el("div", { class: "note" }, note) : null);
  }

  function summary(d) {
    const n = d.network;
    const v = n.verdicts || {};
    const total = d.rows.length;
    const bad = (v.down || 0) + (v.dead || 0);
    fill("summary",
      card("network", n.name || "?", n.network_id ? MP.short(n.network_id, 16) : "no genesis yet"),
      card("committee", n.committee ?? "?", n.replication ? `${n.replication} owners per account, quorum ${n.quorum}` : ""),
      card("epoch", n.epoch.text, n.epoch.note, { id: "epoch-card" }),
      card("peers alive", `${v.alive || 0} / ${total}`, `${v.suspect || 0} suspect · ${bad} down or dead`, { id: "alive-card" }),
      card("views disagree", n.disagreements, n.disagreements ? "on highlighted rows" : "every peer agrees"),
      card("genesis", n.genesis === "pinned" ? "pinned" : "from the peers", n.genesis === "pinned" ? "certificates are checked against it" : n.genesis));
  }

  function matches(row, q) {
    if (!q) return true;
    const text = [row.name, row.peer_id, row.url, row.address, row.verdict, row.process].join(" ").toLowerCase();
    return q.toLowerCase().split(/\s+/).every((word) => text.includes(word));
  }

  function cells(letters) {
    // up to 40 observers get labelled columns; beyond that each cell narrows so 100 fit in a row
    const narrow = letters.length > 40 ? " narrow" : "";
    return el("span", { class: `cells${narrow}`, "aria-label": `views: ${letters}` },
      [...letters].map((ch) => el("i", { class: `cell ${ch === "-" ? "self" : ch === "?" ? "" : ch}` })));
  }

  function counts(c) {
    const parts = ["alive", "suspect", "dead", "left", "unknown"].filter((s) => c && c[s]).map((s) => `${c[s]} ${s}`);
    return parts.length ? parts.join(" · ") : "no other peer reports";
  }

  function peerRow(r, observers) {
    const share = r.ring_share_exact;
    const titleCells = [...r.views].map((ch, i) => `${observers[i]}: ${{ a: "alive", s: "suspect", d: "dead", l: "left", "?": "unknown", "-": "itself" }[ch]}`).join("\n");
    return el("tr", { class: r.verdict === "down" ? "bad" : r.disagree ? "disagree" : "", "data-peer": r.name, "data-verdict": r.verdict },
      el("td", {}, badge(r.verdict), r.process && r.process !== "running" ? [" ", badge(r.process)] : null),
      el("td", {}, el("b", {}, r.name), el("div", { class: "muted mono small", title: r.peer_id || "" }, MP.short(r.peer_id, 16))),
      el("td", { class: "mono small" }, r.address || "–", el("div", { class: "muted" }, r.url || "no API address")),
      el("td", { class: "small" }, r.version || "–", el("div", { class: "muted" }, r.verdict === "down"
        ? (r.last_ok ? `last answer ${MP.ago(r.last_ok)}` : "never answered")
        : r.uptime != null ? `up ${MP.duration(r.uptime)}` : "")),
      el("td", { class: "small" }, share != null ? [el("span", { class: "share" }, el("i", { style: `width:${Math.min(100, share * 100)}%` })), MP.pct(share)] : "–",
        r.ring_share != null ? el("div", { class: "muted" }, `reports ${MP.pct(r.ring_share)}`) : null),
      el("td", { class: "num" }, r.in_flight ?? "–"),
      el("td", { title: titleCells }, cells(r.views), el("div", { class: "muted small" }, counts(r.counts))),
      el("td", { class: "small" }, r.why, r.error && r.verdict === "down" ? el("div", { class: "muted small" }, r.error) : null,
        (r.contract || []).map((c) => el("div", { class: "no small" }, c))));
  }

  function peers(d) {
    const q = search.value.trim();
    let rows = d.rows.filter((r) => matches(r, q));
    const by = group.value;
    if (by === "disagree") rows = [...rows].sort((a, b) => Number(b.disagree) - Number(a.disagree));
    const per = Number(size.value);
    const pages = Math.max(1, Math.ceil(rows.length / per));
    view.page = Math.min(view.page, pages - 1);
    const shown = rows.slice(view.page * per, view.page * per + per);
    const observers = d.observers;
    const head = el("tr", {},
      ["state", "peer", "address · API", "version · uptime", "ring share", "in flight"].map((h) => el("th", { class: h === "in flight" ? "num" : "" }, h)),
      el("th", {}, observers.length <= 40
        ? el("span", { class: "matrix-head" }, observers.map((o) => el("span", { title: o }, o)))
        : `seen by ${observers.length} peers`),
      el("th", {}, "why"));
    const body = [];
    let last = null;
    for (const r of shown) {
      const key = by === "verdict" ? r.verdict : by === "disagree" ? (r.disagree ? "views disagree" : "views agree") : null;
      if (key !== null && key !== last) {
        const count = rows.filter((x) => (by === "verdict" ? x.verdict : x.disagree ? "views disagree" : "views agree") === key).length;
        body.push(el("tr", { class: "group" }, el("td", { colspan: 8 }, `${key} (${count})`)));
        last = key;
      }
      body.push(peerRow(r, observers));
    }
    fill("peers", el("thead", {}, head), el("tbody", {}, body.length ? body : el("tr", {}, el("td", { colspan: 8, class: "empty" }, "no peer matches"))));
    fill("peers-pager", MP.pager(rows.length, view.page, per, (p) => { view.page = p; peers(view.data); }));
  }

  function ring(r) {
    const canvas = document.getElementById("ring");
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!r) {
      fill("ring-note", "The peers do not serve their ring (an older peer API).");
      return;
    }
    const cx = canvas.width / 2, cy = canvas.height / 2, outer = 130, inner = 88;
    const n = r.slices.length;
    let start = 0;
    for (let i = 1; i <= n; i += 1) {
      if (i === n || r.slices[i] !== r.slices[start]) {
        const a0 = (start / n) * 2 * Math.PI - Math.PI / 2, a1 = (i / n) * 2 * Math.PI - Math.PI / 2;
        ctx.beginPath();
        ctx.arc(cx, cy, outer, a0, a1);
        ctx.arc(cx, cy, inner, a1, a0, true);
        ctx.closePath();
        ctx.fillStyle = color(r.slices[start]);
        ctx.fill();
        start = i;
      }
    }
    fill("ring-note", `Colours show the first owner along the ring; each account has ${r.replication} owners (the next distinct peers clockwise). Shares are of all accounts.`);
    const order = r.names.map((name, i) => ({ name, i, share: r.shares[i] })).sort((a, b) => b.share - a.share);
    fill("ring-shares", el("tbody", {}, order.slice(0, 30).map((p) => el("tr", {},
      el("td", {}, el("i", { class: "cell", style: `background:${color(p.i)}` }), " ", p.name),
      el("td", { class: "num" }, MP.pct(p.share))))),
      order.length > 30 ? el("tfoot", {}, el("tr", {}, el("td", { colspan: 2, class: "muted" }, `and ${order.length - 30} more`))) : null);
    canvas.onmousemove = (event) => {
      const box = canvas.getBoundingClientRect();
      const x = event.clientX - box.left - cx, y = event.clientY - box.top - cy;
      const radius = Math.hypot(x, y);
      if (radius < inner || radius > outer) { fill("ring-tip"); return; }
      const turn = ((Math.atan2(y, x) + Math.PI / 2 + 2 * Math.PI) % (2 * Math.PI)) / (2 * Math.PI);
      const who = r.slices[Math.floor(turn * n) % n];
      fill("ring-tip", el("b", {}, r.names[who]), `owns ${MP.pct(r.shares[who])} of accounts`);
    };
    canvas.onmouseleave = () => fill("ring-tip");
  }

  function render(d) {
    view.data = d;
    summary(d);
    peers(d);
    ring(d.ring);
  }

  search.addEventListener("input", () => { view.page = 0; peers(view.data); });
  group.addEventListener("change", () => { view.page = 0; peers(view.data); });
  size.addEventListener("change", () => { view.page = 0; peers(view.data); });
  render(MP.initial);
  MP.live("network", {}, render);
})();
