// The dashboard page: plain JavaScript, no build step.  Data come from
// the node's /api/* (JSON) and /events (server-sent events); charts are
// drawn with uPlot when the build installed it.
"use strict";

const state = { node: "", sort: "memory", view: "node", pid: null, logLevel: "info",
                logAfter: 0, history: [], charts: null, source: null, timer: null, trace: null };
const LEVELS = ["debug", "info", "notice", "warning", "error"];
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

function bytes(n) {
  if (n >= 1 << 30) return (n / (1 << 30)).toFixed(2) + " GiB";
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + " KiB";
  return n + " B";
}

function duration(ms) {
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400); s %= 86400;
  const h = Math.floor(s / 3600); s %= 3600;
  const m = Math.floor(s / 60); s %= 60;
  return (d ? d + "d " : "") + h + "h " + m + "m " + s + "s";
}

function query(params) {
  const q = new URLSearchParams(params || {});
  if (state.node) q.set("node", state.node);
  return q.toString();
}

async function api(path, params, method) {
  const opts = { method: method || "GET", credentials: "same-origin", headers: {} };
  if (opts.method === "POST") opts.headers["x-moonbeam-dashboard"] = "1";
  const r = await fetch(path + "?" + query(params), opts);
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

// ---- the node ----

function card(label, value) { return el("div", { class: "card" }, label, el("b", {}, value)); }

function showNode(n) {
  const m = n.memory || {};
  $("#node-cards").replaceChildren(
    card("node", n.node), card("uptime", duration(n.uptime_ms)),
    card("processes", n.processes + " / " + n.process_limit),
    card("memory (total)", bytes(m.total || 0)), card("processes' memory", bytes(m.processes || 0)),
    card("other memory", bytes(m.other || 0)), card("atoms", n.atoms),
    card("run queues", (n.run_queues || []).join(" ")),
    card("messages/s", n.sample ? n.sample.messages : "…"));
  const util = n.sample ? n.sample.util : [];
  const bars = [];
  for (let i = 0; i < n.schedulers; i++) {
    const u = util[i] || 0;
    const bar = el("div", { class: "bar", id: "sched-" + (i + 1) }, el("span"),
                   el("em", {}, "scheduler " + (i + 1) + ": " + (100 * u).toFixed(1) + " %, queue "
                      + ((n.run_queues || [])[i] || 0)));
    bar.firstChild.style.width = (100 * u).toFixed(1) + "%";
    bars.push(bar);
  }
  $("#sched-bars").replaceChildren(...bars);
}

const SERIES = [
  { key: "util_avg", label: "scheduler utilisation (%)", scale: 100 },
  { key: "messages", label: "messages / s", scale: 1 },
  { key: "memory", label: "memory (MiB)", scale: 1 / (1 << 20) },
  { key: "processes", label: "processes", scale: 1 },
];

function drawCharts() {
  const h = state.history;
  if (typeof uPlot === "undefined") { $("#no-charts").hidden = false; return; }
  const xs = h.map((s) => s.t / 1000);
  if (!state.charts) {
    state.charts = SERIES.map((s) => new uPlot({
      title: s.label, width: 420, height: 180, legend: { show: false },
      scales: { x: { time: false } },
      series: [{ label: "s" }, { label: s.label, stroke: "#5b8def", width: 1.5 }],
      axes: [{ label: "seconds since start" }, {}],
    }, [[], []], $("#charts")));
  }
  SERIES.forEach((s, i) => state.charts[i].setData([xs, h.map((p) => p[s.key] * s.scale)]));
}

async function loadNode() {
  const n = await api("/api/node");
  state.history = n.history || [];
  n.sample = state.history[state.history.length - 1];
  showNode(n);
  if (state.view === "node") drawCharts();
}

async function reloadModule(e) {
  e.preventDefault();
  const name = $("#reload-module").value.trim();
  $("#reload-result").textContent = "…";
  try {
    const r = await api("/api/reload", { module: name }, "POST");
    $("#reload-result").textContent = r.module + ": version " + r.version;
  } catch (err) {
    $("#reload-result").textContent = name + ": " + err.message;
  }
}

// ---- processes ----

function showProcesses(data) {
  $("#proc-total").textContent = data.total + " processes, the first " + data.rows.length
    + " by " + data.sort;
  for (const th of document.querySelectorAll("#proc-table th.sortable")) {
    th.classList.toggle("sorted", th.dataset.sort === data.sort);
  }
  const rows = data.rows.map((row) => {
    const p = {};
    data.columns.forEach((c, i) => { p[c] = row[i]; });
    const tr = el("tr", { "data-pid": p.pid }, el("td", {}, p.pid), el("td", {}, p.name),
      el("td", {}, p.status), el("td", { class: "num" }, p.memory),
      el("td", { class: "num" }, p.reductions), el("td", { class: "num" }, p.message_queue_len),
      el("td", { class: "num" }, p.links), el("td", { class: "num" }, p.monitors),
      el("td", { class: "fn" }, p.current_function || ""));
    tr.addEventListener("click", () => { location.hash = "#/process/" + encodeURIComponent(p.pid); });
    return tr;
  });
  $("#proc-table tbody").replaceChildren(...rows);
}

async function loadProcesses() {
  showProcesses(await api("/api/processes", { sort: state.sort, limit: 200 }));
}

// ---- one process ----

function pidLinks(list) {
  const span = el("span");
  (list || []).forEach((p, i) => {
    if (i) span.append(", ");
    span.append(el("a", { href: "#/process/" + encodeURIComponent(p) }, p));
  });
  if (!list || !list.length) span.append("none");
  return span;
}

async function loadProcess() {
  const pid = state.pid;
  $("#process-title").textContent = "Process " + pid;
  let p;
  try {
    p = await api("/api/process", { pid });
  } catch (e) {
    $("#process-view").replaceChildren(el("p", { class: "note" }, pid + ": " + e.message));
    $("#process-messages").replaceChildren();
    $("#kill-button").hidden = true;
    return;
  }
  $("#kill-button").hidden = false;
  const rows = [["name", p.name || "(none)"], ["status", p.status],
    ["current function", el("code", { id: "process-function" }, p.current_function || "")],
    ["memory", bytes(p.memory)],
    ["reductions", p.reductions], ["mailbox length", p.message_queue_len],
    ["trap_exit", p.trap_exit], ["links", pidLinks(p.links)],
    ["monitors", pidLinks(p.monitors)], ["monitored by", pidLinks(p.monitored_by)]];
  $("#process-view").replaceChildren(el("table", {}, el("tbody", {},
    ...rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))))));
  $("#process-stack").replaceChildren(...(p.stack || []).map((f) => el("li", {}, el("code", {}, f))));
  $("#process-messages").replaceChildren(...(p.messages.length
    ? p.messages.map((m) => el("li", {}, el("code", {}, m)))
    : [el("li", { class: "note" }, "empty")]));
  $("#messages-note").textContent = p.messages_note || "";
  $("#process-state").textContent = "…";
  api("/api/state", { pid }).then((s) => {
    $("#process-state").textContent = s.state;
    // A GenServer shows its whole mailbox's head, which it reads itself.
    if (s.messages.length) {
      $("#process-messages").replaceChildren(...s.messages.map((m) => el("li", {}, el("code", {}, m))));
      $("#messages-note").textContent = "";
    }
  }, (e) => { $("#process-state").textContent = e.message; });
}

async function killProcess() {
  if (!confirm("Kill process " + state.pid + "? It exits with reason kill.")) return;
  try {
    await api("/api/kill", { pid: state.pid }, "POST");
    $("#process-state").textContent = "killed";
  } catch (e) {
    alert("Cannot kill " + state.pid + ": " + e.message);
  }
  loadProcess();
}

// ---- tracing a process ----

// Closing the stream ends the trace on the node (its tracer sees the
// stream go).
function closeTrace() {
  if (state.trace) state.trace.close();
  state.trace = null;
  $("#trace-start").hidden = false;
  $("#trace-stop").hidden = true;
}

function traceLine(text, cls) {
  const box = $("#trace-lines");
  box.append(el("div", { class: "line " + (cls || "") }, text));
  while (box.childElementCount > 2000) box.firstChild.remove();
  box.scrollTop = box.scrollHeight;
}

async function startTrace(e) {
  e.preventDefault();
  closeTrace();
  const kinds = [...document.querySelectorAll("#trace-form input[name=kind]:checked")]
    .map((i) => i.value);
  // On a process's page, that process; on the process table, those whose
  // registered names match the pattern.
  const target = state.view === "processes" ? { match: $("#trace-match").value } : { pid: state.pid };
  let t;
  try {
    t = await api("/api/trace", { ...target, flags: kinds.join(","),
                                  max: $("#trace-max").value, rate: $("#trace-rate").value }, "POST");
  } catch (err) {
    $("#trace-status").textContent = "Cannot trace: " + err.message;
    return;
  }
  $("#trace-lines").replaceChildren();
  $("#trace-status").textContent = "Tracing " + t.traced + (t.traced === 1 ? " process" : " processes");
  const src = new EventSource("/events?" + new URLSearchParams({ trace: t.id }));
  state.trace = src;
  $("#trace-start").hidden = true;
  $("#trace-stop").hidden = false;
  src.addEventListener("trace", (ev) => traceLine(JSON.parse(ev.data)));
  src.addEventListener("stopped", (ev) => {
    const text = JSON.parse(ev.data);
    traceLine(text, "stopped");
    $("#trace-status").textContent = text;
    closeTrace();
  });
  src.addEventListener("error", () => {
    if (state.trace !== src) return;
    $("#trace-status").textContent = "The trace's stream ended.";
    closeTrace();
  });
}

// The trace form goes with the view: under a process's page, or under
// the process table with a name pattern.
function placeTrace() {
  const block = $("#trace-block");
  const table = state.view === "processes";
  $("#trace-match-label").hidden = !table;
  $("#trace-match").required = table;
  if (table) $("#view-processes").append(block);
  else $("#kill-button").parentElement.before(block);
}

async function stopTrace() {
  try {
    await api("/api/trace/stop", {}, "POST");
  } catch (err) {
    $("#trace-status").textContent = err.message;
  }
}

// ---- applications ----

function treeNode(n) {
  const label = el("span", { class: n.type === "supervisor" ? "sup" : "worker" },
    n.id + " ", n.pid ? el("a", { href: "#/process/" + encodeURIComponent(n.pid) }, n.pid) : "",
    n.name && n.name !== n.id ? " (" + n.name + ")" : "");
  const li = el("li", { "data-id": n.id }, label);
  if (n.children && n.children.length) li.append(el("ul", {}, ...n.children.map(treeNode)));
  return li;
}

async function loadApps() {
  const apps = await api("/api/applications");
  $("#apps").replaceChildren(...apps.map((a) => el("div", { class: "app" },
    el("h3", {}, a.name + " " + a.version + " ", el("span", { class: "note" },
      a.type + " — " + a.description)),
    a.tree ? el("ul", { class: "tree" }, treeNode(a.tree)) : el("p", { class: "note" }, "a library"))));
}

// ---- cluster ----

async function loadCluster() {
  const c = await api("/api/cluster");
  const sel = $("#node-select");
  const keep = state.node;
  const options = [el("option", { value: "" }, c.node + " (this node)")];
  for (const n of c.nodes) if (n.kind === "moonbeam") options.push(el("option", { value: n.name }, n.name));
  sel.replaceChildren(...options);
  sel.value = keep;
  $("#cluster-table tbody").replaceChildren(...(c.nodes.length ? c.nodes.map((n) => {
    const tr = el("tr", {}, el("td", {}, n.name), el("td", {}, n.visible ? "visible" : "hidden"),
      el("td", {}, n.kind));
    if (n.kind === "moonbeam") tr.addEventListener("click", () => selectNode(n.name));
    return tr;
  }) : [el("tr", {}, el("td", { colspan: 3, class: "note" }, "no other node is connected"))]));
}

// ---- the log ----

function addLog(lines) {
  const box = $("#log-lines");
  const min = LEVELS.indexOf(state.logLevel);
  for (const l of lines) {
    if (LEVELS.indexOf(l.level) < min) continue;
    const t = new Date(l.time_ms).toISOString().slice(11, 23);
    box.append(el("div", { class: "line " + l.level, "data-level": l.level },
      t + " [" + l.level + "] " + l.text));
  }
  while (box.childElementCount > 2000) box.firstChild.remove();
  box.scrollTop = box.scrollHeight;
}

// ---- live updates ----

function connect() {
  if (state.source) state.source.close();
  state.logAfter = 0;
  $("#log-lines").replaceChildren();
  const src = new EventSource("/events?" + query({ level: state.logLevel }));
  state.source = src;
  src.addEventListener("open", () => { $("#conn").textContent = "live"; $("#conn").classList.add("live"); });
  src.addEventListener("error", () => { $("#conn").textContent = "reconnecting"; $("#conn").classList.remove("live"); });
  src.addEventListener("node", (e) => {
    const n = JSON.parse(e.data);
    if (n.sample && (!state.history.length || state.history[state.history.length - 1].t !== n.sample.t)) {
      state.history.push(n.sample);
      if (state.history.length > 300) state.history.shift();
    }
    showNode(n);
    if (state.view === "node") drawCharts();
  });
  src.addEventListener("log", (e) => addLog(JSON.parse(e.data)));
}

function selectNode(name) {
  state.node = name;
  $("#node-select").value = name;
  state.history = [];
  connect();
  loadNode().catch(() => {});
  route();
}

// ---- views ----

const LOADERS = { node: loadNode, processes: loadProcesses, process: loadProcess,
                  apps: loadApps, cluster: loadCluster, log: async () => {} };

function route() {
  const shown = state.view + " " + state.pid;
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  let view = parts[0] || "node";
  if (view === "process") state.pid = decodeURIComponent(parts.slice(1).join("/"));
  if (!LOADERS[view]) view = "node";
  state.view = view;
  if (state.trace && state.view + " " + state.pid !== shown) closeTrace();
  placeTrace();
  for (const v of document.querySelectorAll(".view")) v.classList.toggle("active", v.id === "view-" + view);
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.id === "tab-" + (view === "process" ? "processes" : view));
  }
  LOADERS[view]().catch((e) => console.error(e));
}

function refresh() {
  // Tables that are not streamed are read again every 2 s while shown.
  if (state.view === "processes") loadProcesses().catch(() => {});
}

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  for (const th of document.querySelectorAll("#proc-table th.sortable")) {
    th.addEventListener("click", () => { state.sort = th.dataset.sort; loadProcesses(); });
  }
  $("#kill-button").addEventListener("click", killProcess);
  $("#trace-form").addEventListener("submit", startTrace);
  $("#reload-form").addEventListener("submit", reloadModule);
  $("#trace-stop").addEventListener("click", stopTrace);
  $("#node-select").addEventListener("change", (e) => selectNode(e.target.value));
  $("#log-level").addEventListener("change", (e) => { state.logLevel = e.target.value; connect(); });
  loadCluster().catch(() => {});
  loadNode().catch(() => {});
  connect();
  route();
  state.timer = setInterval(refresh, 2000);
});
