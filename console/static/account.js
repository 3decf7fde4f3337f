/* One account: every owner's view side by side (differences highlighted), and its history. */
"use strict";
(() => {
  const { el, fill, badge } = MP;
  const address = document.getElementById("account-address").textContent.trim();
  const params = new URLSearchParams(location.search);
  const before = params.get("before");

  function card(label, value, note) {
    return el("div", { class: "card" }, el("div", { class: "label" }, label), el("div", { class: "value" }, value),
      note ? el("div", { class: "note" }, note) : null);
  }

  function render(d) {
    if (d.error) {
      fill("account-summary", el("div", { class: "notice" }, d.error));
      return;
    }
    fill("account-name", d.name ? badge(d.name, "info") : null);
    const answered = d.owners.filter((o) => !o.error).length;
    fill("account-summary",
      card("balance", MP.amount(d.balance, d.decimals), "as most owners report it"),
      card("next sequence number", d.next_seq ?? "–"),
      card("owners answering", `${answered} / ${d.owners.length}`, d.quorum ? `quorum ${d.quorum}` : ""),
      card("replicas", d.agree ? badge("agree") : badge("disagree"), d.agree ? "every owner reports the same" : "see the highlighted rows"),
      card("frozen", d.frozen_seq !== null ? badge(`frozen at seq ${d.frozen_seq}`, "frozen") : badge("no", "ok"),
        d.frozen_seq !== null ? "owners are locked to different orders for that seq; no payment can use it" : ""));
    fill("account-owners",
      el("thead", {}, el("tr", {}, ["owner", "balance", "next seq", "credits", "history", "lock at next seq", ""].map((h, i) => el("th", { class: i && i < 5 ? "num" : "" }, h)))),
      el("tbody", {}, d.owners.map((o) => el("tr", { class: o.error ? "bad" : o.differs ? "diff" : "", "data-owner": o.name },
        el("td", {}, el("b", {}, o.name), el("div", { class: "muted mono small" }, MP.short(o.peer_id, 16))),
        ...(o.error ? [el("td", { colspan: 6, class: "small" }, o.error)] : [
          el("td", { class: "num diffcell" }, MP.amount(o.balance, d.decimals)),
          el("td", { class: "num diffcell" }, o.next_seq),
          el("td", { class: "num diffcell" }, o.credits),
          el("td", { class: "num" }, o.history_length),
          el("td", {}, o.pending ? [`seq ${o.pending[0]} → `, MP.paymentLink(o.pending[1])] : el("span", { class: "muted" }, "none")),
          el("td", {}, o.differs ? badge("differs", "disagree") : null),
        ])))));
    const h = d.history;
    fill("history-from", h ? `from ${h.from}, newest first` : "");
    fill("account-history", h ? [
      el("thead", {}, el("tr", {}, ["#", "", "amount", "counterparty", "seq", "memo", "payment"].map((x, i) => el("th", { class: [0, 2, 4].includes(i) ? "num" : "" }, x)))),
      el("tbody", {}, h.entries.length ? h.entries.map((e) => el("tr", {},
        el("td", { class: "num" }, e.index), el("td", {}, badge(e.direction === "in" ? "in" : "out", e.direction === "in" ? "ok" : "info")),
        el("td", { class: "num" }, (e.direction === "out" ? "−" : "+") + MP.amount(e.amount, d.decimals)),
        el("td", {}, e.counterparty ? MP.accountLink(e.counterparty) : "–"), el("td", { class: "num" }, e.seq ?? "–"),
        el("td", {}, e.memo || ""), el("td", {}, MP.paymentLink(e.payment_id))))
        : el("tr", {}, el("td", { colspan: 7, class: "empty" }, "no payments yet"))),
    ] : el("tbody", {}, el("tr", {}, el("td", { class: "empty" }, "no owner served the history"))));
    fill("history-pager",
      before ? MP.link(`/accounts/${address}`, "« newest") : null,
      h && h.next_before !== null ? MP.link(`/accounts/${address}?before=${h.next_before}`, "older »") : null);
  }

  render(MP.initial);
  MP.live("account", { address, before }, render);
})();
