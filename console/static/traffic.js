/* Traffic page: four uPlot charts over the last minutes and a per-peer table. */
"use strict";
(() => {
  const { el, fill } = MP;
  const select = document.getElementById("traffic-peer");
  const CHARTS = [
    { id: "chart-payments", unit: "/s", series: [["certified", "certified/s", "#2f6fde"], ["settled", "settled/s", "#1f9d55"], ["failed", "failed/s", "#d0312d"]] },
    { id: "chart-latency", unit: " ms", series: [["certified_p50", "certified p50", "#7aa5ef"], ["certified_p99", "certified p99", "#2f6fde"], ["settled_p50", "settled p50", "#7fcf9f"], ["settled_p99", "settled p99", "#1f9d55"]] },
    { id: "chart-queues", unit: "", series: [["group_commit", "group commit", "#8e5bd6"], ["gateway_in_flight", "gateway in flight", "#d98a00"], ["inbound_messages", "inbound messages", "#2aa1b3"]] },
    { id: "chart-bytes", unit: "B/s", series: [["bytes_in", "in", "#2aa1b3"], ["bytes_out", "out", "#d06a2d"]] },
  ];
  const fmt = (unit) => (u, v) => (v === null || v === undefined ? "–" : unit === "B/s" ? `${MP.bytes(v)}/s` : `${v.toFixed(v < 10 ? 1 : 0)}${unit}`);
  const plots = CHARTS.map((c) => {
    const node = document.getElementById(c.id);
    return new uPlot({
      width: Math.max(300, node.clientWidth), height: 210,
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max || 0, c.unit === " ms" ? 10 : 1) * 1.1] } },
      series: [{}, ...c.series.map(([, label, stroke]) => ({ label, stroke, width: 2, spanGaps: false, value: fmt(c.unit) }))],
      axes: [{}, { size: 64, values: (u, vals) => vals.map((v) => (c.unit === "B/s" ? MP.bytes(v) : String(v))) }],
    }, [[], ...c.series.map(() => [])], node);
  });
  window.addEventListener("resize", () => CHARTS.forEach((c, i) => plots[i].setSize({ width: Math.max(300, document.getElementById(c.id).clientWidth), height: 210 })));

  function options(peers, chosen) {
    const wanted = [["all", "all peers (total)"], ...peers.map((p) => [p.url, p.name])];
    if (select.options.length !== wanted.length) {
      fill(select, wanted.map(([value, label]) => el("option", { value }, label)));
    }
    select.value = chosen;
  }

  function table(rows) {
    const head = el("tr", {}, ["peer", "certified/s", "settled/s", "failed/s", "certified p50", "certified p99", "settled p99",
      "bytes in/s", "bytes out/s", "429+503/s", "group commit", "in flight", "inbound"].map((h, i) => el("th", { class: i ? "num" : "" }, h)));
    const body = rows.map((r) => el("tr", { class: r.up === false ? "bad" : "" },
      el("td", {}, r.name),
      ...[MP.perSecond(r.certified), MP.perSecond(r.settled), MP.perSecond(r.failed), MP.ms(r.certified_p50), MP.ms(r.certified_p99),
        MP.ms(r.settled_p99), r.bytes_in == null ? "–" : MP.bytes(r.bytes_in), r.bytes_out == null ? "–" : MP.bytes(r.bytes_out),
        MP.perSecond(r.overload), r.queues ? r.queues.group_commit : "–", r.queues ? r.queues.gateway_in_flight : "–",
        r.queues ? r.queues.inbound : "–"].map((v) => el("td", { class: "num" }, v))));
    fill("traffic-table", el("thead", {}, head), el("tbody", {}, body));
  }

  function render(d) {
    options(d.peers, d.peer);
    const s = d.series;
    CHARTS.forEach((c, i) => plots[i].setData([s.t, ...c.series.map(([key]) => s[key])]));
    table(d.table);
    fill("failures", d.failures.length
      ? ["Failures in the last 10 s: ", d.failures.map(([code, rate]) => `${code} ${rate.toFixed(1)}/s`).join(", ")]
      : el("span", { class: "muted" }, "No failed payments in the last 10 s."));
  }

  render(MP.initial);
  const stream = MP.live("traffic", {}, render);
  select.addEventListener("change", () => stream.update({ peer: select.value }));
})();
