/* meshpay console: shared helpers. Every page script renders its data with MP.el (text nodes only,
   never innerHTML: memos and names come from the network) and follows MP.live(topic) for updates. */
"use strict";

const MP = (() => {
  const initial = JSON.parse(document.getElementById("initial-data").textContent || "{}");

  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === null || kid === undefined || kid === false) continue;
      node.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }

  function fill(target, ...kids) {
    const node = typeof target === "string" ? document.getElementById(target) : target;
    node.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false));
    return node;
  }

  // ---- formatting ----------------------------------------------------------------------------------
  function amount(minor, decimals) {
    if (minor === null || minor === undefined) return "?";
    const neg = minor < 0;
    let digits = String(Math.abs(minor));
    if (decimals > 0) {
      digits = digits.padStart(decimals + 1, "0");
      const whole = digits.slice(0, -decimals).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
      digits = whole + "." + digits.slice(-decimals);
    } else {
      digits = digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    }
    return (neg ? "-" : "") + digits;
  }
  const short = (id, n = 12) => (id ? String(id).slice(0, n) + (String(id).length > n ? "…" : "") : "?");
  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "–";
    if (seconds < 60) return `${seconds.toFixed(0)} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min ${Math.floor(seconds % 60)} s`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
    return `${Math.floor(seconds / 86400)} d ${Math.floor((seconds % 86400) / 3600)} h`;
  }
  const ago = (ts) => (ts ? duration(Math.max(0, Date.now() / 1000 - ts)) + " ago" : "–");
  const clock = (ts) => (ts ? new Date(ts * 1000).toLocaleTimeString() : "–");
  const ms = (x) => (x === null || x === undefined ? "–" : x < 10 ? `${x.toFixed(1)} ms` : `${x.toFixed(0)} ms`);
  const perSecond = (x) => (x === null || x === undefined ? "–" : `${x.toFixed(x < 10 ? 1 : 0)}/s`);
  function bytes(x) {
    if (x === null || x === undefined) return "–";
    const units = ["B", "KB", "MB", "GB"];
    let i = 0;
    while (x >= 1024 && i < units.length - 1) { x /= 1024; i += 1; }
    return `${x.toFixed(x < 10 && i ? 1 : 0)} ${units[i]}`;
  }
  const pct = (x) => (x === null || x === undefined ? "–" : `${(x * 100).toFixed(1)}%`);
  const badge = (text, kind) => el("span", { class: `badge b-${kind || text}` }, text);
  const link = (href, text, attrs) => el("a", { href, ...(attrs || {}) }, text);
  const accountLink = (address, names) =>
    link(`/accounts/${address}`, names && names[address] ? `${names[address]} (${short(address, 10)})` : short(address, 16),
      { title: address, class: "mono" });
  const paymentLink = (id) => link(`/payments/${id}`, short(id, 16), { class: "mono", title: id });

  // ---- live updates -------------------------------------------------------------------------------------
  function setLive(state) {
    const node = document.getElementById("live");
    node.className = `live ${state ? "on" : "off"}`;
    node.title = state ? "live updates: connected" : "live updates: reconnecting";
  }
  function nav(info) {
    if (!info) return;
    const node = document.getElementById("alert-badge");
    node.hidden = !info.alerts;
    node.textContent = info.alerts;
    node.className = `badge-count${info.critical ? "" : " warn"}`;
  }
  function live(topic, params, render) {
    let source = null;
    let current = params || {};
    function open() {
      const query = new URLSearchParams(Object.entries(current).filter(([, v]) => v !== null && v !== undefined && v !== ""));
      source = new EventSource(`/events/${topic}?${query}`);
      source.onmessage = (event) => {
        const data = JSON.parse(event.data);
        setLive(true);
        nav(data._nav);
        render(data);
      };
      source.onerror = () => setLive(false);
    }
    open();
    return {
      update(next) {
        current = { ...current, ...next };
        source.close();
        open();
      },
    };
  }
  nav(initial._nav);

  // ---- actions ------------------------------------------------------------------------------------------
  function confirm(title, text, okLabel) {
    const dialog = document.getElementById("confirm");
    fill("confirm-title", title);
    fill("confirm-text", text);
    document.getElementById("confirm-ok").textContent = okLabel || "Confirm";
    dialog.returnValue = "";
    dialog.showModal();
    return new Promise((resolve) => dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true }));
  }
  function toast(result) {
    const node = el("div", { class: `toast${result.ok ? "" : " fail"}`, role: "status" },
      el("b", {}, result.ok ? "Done: " : "Failed: "), result.message,
      result.command ? el("div", { class: "muted small mono" }, result.command) : null);
    document.getElementById("toasts").append(node);
    setTimeout(() => node.remove(), 9000);
  }
  async function act(path, body) {
    let result;
    try {
      const response = await fetch(path, {
        method: "POST", headers: { "Content-Type": "application/json", "X-Console": "1" }, body: JSON.stringify(body),
      });
      result = await response.json();
      if (result.error && !result.message) result.message = result.error.message;
    } catch (error) {
      result = { ok: false, message: `the console did not answer: ${error}` };
    }
    toast(result);
    return result;
  }

  // ---- paging ---------------------------------------------------------------------------------------------
  function pager(total, page, size, onPage) {
    const pages = Math.max(1, Math.ceil(total / size));
    return el("div", { class: "pager" },
      el("button", { class: "small", disabled: page <= 0, onclick: () => onPage(page - 1), "aria-label": "previous page" }, "‹ prev"),
      el("span", {}, `page ${Math.min(page + 1, pages)} of ${pages} · ${total} in all`),
      el("button", { class: "small", disabled: page + 1 >= pages, onclick: () => onPage(page + 1), "aria-label": "next page" }, "next ›"));
  }

  // call fn(text) once typing in `input` pauses
  function onTyping(input, ms, fn) {
    let timer = null;
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(input.value.trim()), ms);
    });
  }

  return { initial, el, fill, onTyping, amount, short, duration, ago, clock, ms, perSecond, bytes, pct, badge, link,
    accountLink, paymentLink, live, confirm, act, toast, pager };
})();
