/* Accounts page: known accounts, each read from all its owners (paged and filtered on the server). */
"use strict";
(() => {
  const { el, fill, badge } = MP;
  const filter = document.getElementById("accounts-filter");
  let page = 0;
  let stream = null;

  function render(d) {
    const head = el("tr", {}, ["account", "balance", "next seq", "owners answering", "replicas", ""]
      .map((h, i) => el("th", { class: [1, 2].includes(i) ? "num" : "" }, h)));
    const rows = d.rows.map((r) => el("tr", { class: r.frozen_seq !== null ? "bad" : r.agree ? "" : "disagree", "data-account": r.address },
      el("td", {}, r.name ? el("b", {}, r.name, " ") : null, MP.link(`/accounts/${r.address}`, r.address, { class: "mono" })),
      el("td", { class: "num" }, MP.amount(r.balance, d.decimals)),
      el("td", { class: "num" }, r.next_seq ?? "–"),
      el("td", {}, `${r.answered} of ${r.owners}`),
      el("td", {}, r.agree ? badge("agree") : badge("disagree")),
      el("td", {}, r.frozen_seq !== null ? badge(`frozen at seq ${r.frozen_seq}`, "frozen") : null)));
    fill("accounts", el("thead", {}, head), el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: 6, class: "empty" }, "no account matches"))));
    fill("accounts-pager", MP.pager(d.total, d.page, d.page_size, (p) => { page = p; stream.update({ page }); }));
  }

  render(MP.initial);
  stream = MP.live("accounts", { page }, render);
  MP.onTyping(filter, 300, (q) => { page = 0; stream.update({ page, q }); });
})();
