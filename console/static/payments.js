/* Payments page: the live feed of recent certificates, filterable and paged on the server. */
"use strict";
(() => {
  const { el, fill, badge } = MP;
  const filter = document.getElementById("feed-filter");
  let page = 0;
  let stream = null;

  function render(d) {
    const names = Object.fromEntries(d.rows.flatMap((r) => Object.entries(r.names).map(([side, name]) => [r[side], name])));
    fill("feed-count", `${d.total} in the last ${d.total >= 2000 ? "2000" : "minutes"}`);
    const head = el("tr", {}, ["seen", "payment", "from", "to", "amount", "seq", "gateway", "status", "applied by owners"]
      .map((h, i) => el("th", { class: [4, 5].includes(i) ? "num" : "" }, h)));
    const rows = d.rows.map((r) => el("tr", { "data-payment": r.payment_id },
      el("td", { class: "small", title: new Date(r.at * 1000).toISOString() }, MP.clock(r.at)),
      el("td", {}, MP.paymentLink(r.payment_id)),
      el("td", {}, MP.accountLink(r.from, names)),
      el("td", {}, MP.accountLink(r.to, names)),
      el("td", { class: "num" }, MP.amount(r.amount, d.decimals)),
      el("td", { class: "num" }, r.seq),
      el("td", {}, r.gateway || el("span", { class: "muted" }, "not seen")),
      el("td", {}, badge(r.status)),
      el("td", { class: "small" }, `debit ${r.debits} · credit ${r.credits}`, d.quorum ? el("span", { class: "muted" }, ` (quorum ${d.quorum})`) : null)));
    fill("feed", el("thead", {}, head), el("tbody", {}, rows.length ? rows
      : el("tr", {}, el("td", { colspan: 9, class: "empty" }, "No certificates yet: send a payment (Controls) or start a load run."))));
    fill("feed-pager", MP.pager(d.total, d.page, d.page_size, (p) => { page = p; stream.update({ page }); }));
  }

  render(MP.initial);
  stream = MP.live("feed", { page }, render);
  MP.onTyping(filter, 250, (q) => { page = 0; stream.update({ page, q }); });
})();
