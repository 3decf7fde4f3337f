/* One payment across the peers: order, gateway, votes with arrival times, owners, certificate. */
"use strict";
(() => {
  const { el, fill, badge } = MP;
  const id = document.getElementById("payment-id").textContent.trim();
  const yes = (ok, label) => (ok === null || ok === undefined ? el("span", { class: "muted" }, label || "no answer")
    : el("span", { class: ok ? "yes" : "no" }, ok ? "✓" : "✗"));
  const kv = (pairs) => pairs.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]);

  function verdictBox(d) {
    const v = d.verdict;
    if (!v) {
      return el("div", { class: "notice" }, d.status === "unknown"
        ? `No peer that answered (${d.answered} of ${d.asked}) knows this payment.`
        : "No certificate for this payment yet.");
    }
    return el("div", { class: `verdict ${v.valid ? "valid" : "invalid"}`, id: "verdict-box" },
      el("div", { class: "big" }, v.valid ? "Certificate valid" : "Certificate INVALID"),
      el("div", {}, v.valid ? `Checked in the console against the genesis: ${v.reason}.` : v.reason));
  }

  function render(d) {
    const names = d.names || {};
    fill("payment-status", badge(d.status));
    fill("payment-verdict", verdictBox(d));
    const o = d.order;
    fill("payment-order", o ? kv([
      ["from", MP.accountLink(o.sender, names)], ["to", MP.accountLink(o.recipient, names)],
      ["amount", MP.amount(o.amount, d.decimals)], ["sequence", String(o.seq)], ["memo", o.memo || el("span", { class: "muted" }, "(none)")],
    ]) : el("dd", { class: "muted" }, "unknown"));
    fill("payment-gateway", d.gateway ? kv([
      ["gateway", el("b", { id: "gateway-name" }, d.gateway)], ["its status", badge(d.gateway_status)],
      ["received the order", d.submitted_at ? new Date(d.submitted_at * 1000).toLocaleString() : "–"],
      ["certified after", MP.ms(d.certified_ms)], ["settled after", MP.ms(d.settled_ms)],
      ...(d.failure ? [["failed", d.failure]] : []),
    ]) : el("dd", { class: "muted" }, "No reachable peer reports being this payment's gateway (it may have restarted)."));
    const inCert = d.votes.filter((v) => v.in_certificate).length;
    fill("votes-summary", `${d.votes.length} votes, ${inCert} in the certificate (quorum ${d.quorum ?? "?"})`);
    fill("payment-votes",
      el("thead", {}, el("tr", {}, ["voter", "id", "arrived at the gateway", "in the certificate", "signature"].map((h) => el("th", {}, h)))),
      el("tbody", {}, d.votes.map((v) => el("tr", { "data-voter": v.name },
        el("td", {}, el("b", {}, v.name)), el("td", { class: "mono small", title: v.voter }, MP.short(v.voter, 16)),
        el("td", {}, v.after_ms === null ? el("span", { class: "muted" }, "–") : `+${MP.ms(v.after_ms)}`),
        el("td", {}, yes(v.in_certificate)), el("td", {}, yes(v.signature, "not checked"))))));
    fill("payment-refusals", d.refusals.length ? el("p", { class: "small" }, "Refusals: ",
      d.refusals.map(([who, code, detail]) => `${who}: ${code} (${detail})`).join("; ")) : null);
    for (const [target, owners, side] of [["debit-owners", d.debit_owners, "debit"], ["credit-owners", d.credit_owners, "credit"]]) {
      const applied = owners.filter((r) => r.applied).length;
      fill(target,
        el("thead", {}, el("tr", {}, el("th", {}, "owner"), el("th", {}, `${side} applied`), el("th", {}, ""))),
        el("tbody", {}, owners.map((r) => el("tr", { "data-owner": r.name, "data-applied": String(r.applied) },
          el("td", {}, el("b", {}, r.name)), el("td", {}, yes(r.applied)), el("td", { class: "muted small" }, r.note)))),
        el("tfoot", {}, el("tr", {}, el("td", { colspan: 3, class: "muted small" }, `${applied} of ${owners.length} applied it`))));
    }
    fill("payment-certs", d.certificates.length ? d.certificates.map(([cbor, v, servers]) => el("div", { style: "margin-bottom:10px" },
      badge(v.valid ? "valid" : "invalid"), ` served by ${servers.join(", ")}`,
      v.valid ? null : el("div", { class: "no small" }, v.reason),
      el("details", {}, el("summary", {}, `canonical CBOR (${cbor.length / 2} bytes)`), el("pre", { class: "hex" }, cbor)),
      el("a", { href: `/verify?cert=${cbor}` }, "check it on the Verify page"))) : el("p", { class: "muted" }, "none"));
    fill("payment-asked", `Asked ${d.asked} reachable peers; ${d.answered} answered.`,
      d.problems.length ? el("span", {}, " Problems: ", d.problems.join("; ")) : null);
  }

  render(MP.initial);
  MP.live("payment", { id }, render);
})();
