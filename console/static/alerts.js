/* Alerts page: what needs attention now, worst first, and the latest supply audit. */
"use strict";
(() => {
  const { el, fill, badge } = MP;

  function audit(a) {
    if (!a) return el("p", { class: "muted" }, "The first audit runs a few seconds after the console starts.");
    if (a.total === null) return el("p", { class: "no" }, `Could not audit: ${a.error}`);
    return el("dl", { class: "kv" },
      el("dt", {}, "result"), el("dd", {}, a.balanced ? badge("supply conserved", "ok") : badge(a.busy ? "differs (in flight)" : "supply differs", a.busy ? "warning" : "critical")),
      el("dt", {}, "total supply"), el("dd", {}, `${MP.amount(a.total, a.decimals)} (genesis ${MP.amount(a.genesis, a.decimals)})`),
      el("dt", {}, "accounts"), el("dd", {}, `${a.accounts}, read from ${a.peers} peers`),
      el("dt", {}, "replicas disagreeing"), el("dd", {}, `${a.disagreeing} now, ${a.persistent} in two audits in a row`),
      el("dt", {}, "network"), el("dd", {}, a.busy ? "payments were in flight (differences may be transient)" : "quiet"),
      el("dt", {}, "when"), el("dd", {}, MP.ago(a.at)),
      a.error ? [el("dt", {}, "problems"), el("dd", { class: "no" }, a.error)] : null);
  }

  function render(d) {
    fill("alert-counts", ["critical", "warning", "info"].map((s) => el("div", { class: "card" },
      el("div", { class: "label" }, s), el("div", { class: "value" }, d.counts[s] || 0))));
    fill("audit", audit(d.audit));
    fill("alerts",
      el("thead", {}, el("tr", {}, ["severity", "what", "where", "details"].map((h) => el("th", {}, h)))),
      el("tbody", {}, d.alerts.length ? d.alerts.map((a) => el("tr", { "data-kind": a.kind, "data-subject": a.subject },
        el("td", {}, badge(a.severity)), el("td", {}, el("b", {}, a.kind)),
        el("td", { class: a.subject.startsWith("mp1") ? "mono small" : "" }, a.link ? MP.link(a.link, a.subject) : a.subject),
        el("td", {}, a.message)))
        : el("tr", {}, el("td", { colspan: 4, class: "empty" }, "Nothing needs attention."))));
  }

  render(MP.initial);
  MP.live("alerts", {}, render);
})();
