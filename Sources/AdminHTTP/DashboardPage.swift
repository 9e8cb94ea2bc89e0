/// The dashboard at `GET /` (docs/operations.md): one static page, no build step and nothing loaded
/// from elsewhere. It reads `GET /api/overview` once a second and draws the cluster from it; the
/// "make leader" buttons `POST /api/leadership-transfer`. Every value is put in the page as text
/// (`textContent`), never as markup.
public enum DashboardPage {
    /// The page, with headers that keep it from being framed or fed scripts from elsewhere.
    public static var response: AdminResponse {
        AdminResponse(status: .ok, contentType: "text/html; charset=utf-8", body: html, headers: [
            ("content-security-policy", "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
        ])
    }

    public static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>RaftMQ dashboard</title>
<style>
  :root { --fg:#1d2330; --muted:#667085; --line:#e4e7ec; --bg:#f6f7f9; --card:#fff; --accent:#2f6fde;
          --ok:#14804a; --warn:#b54708; --bad:#c01048; --lead:#2f6fde; }
  * { box-sizing: border-box; }
  body { margin:0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--fg); background:var(--bg); }
  header { display:flex; align-items:center; gap:16px; padding:12px 24px; background:#111827; color:#f9fafb; }
  header h1 { font-size:18px; margin:0; font-weight:600; letter-spacing:.2px; }
  header .where { color:#9ca3af; }
  header .live { margin-left:auto; display:flex; align-items:center; gap:8px; color:#d1d5db; }
  .dot { width:9px; height:9px; border-radius:50%; background:#6b7280; display:inline-block; }
  .dot.ok { background:#22c55e; } .dot.bad { background:#ef4444; }
  main { padding:20px 24px 40px; max-width:1280px; margin:0 auto; }
  section { margin-bottom:26px; }
  h2 { font-size:15px; margin:0 0 10px; font-weight:600; }
  h2 .count { color:var(--muted); font-weight:400; }
  .card { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:14px 16px; margin-bottom:14px; }
  .card h3 { margin:0 0 8px; font-size:15px; display:flex; align-items:center; gap:10px; flex-wrap:wrap; }
  .card h3 .facts { color:var(--muted); font-weight:400; font-size:13px; }
  table { border-collapse:collapse; width:100%; }
  th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); white-space:nowrap; }
  th { font-weight:500; color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.4px; }
  td.num, th.num { text-align:right; font-variant-numeric: tabular-nums; }
  tr:last-child td { border-bottom:none; }
  .badge { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px; font-weight:600; background:#eef2f6; color:#344054; }
  .badge.leader { background:#e0eaff; color:var(--lead); } .badge.follower { background:#ecfdf3; color:var(--ok); }
  .badge.candidate, .badge.precandidate { background:#fffaeb; color:var(--warn); } .badge.down { background:#fff1f3; color:var(--bad); }
  .badge.master { background:#e0eaff; color:var(--lead); } .badge.slave { background:#ecfdf3; color:var(--ok); }
  .chips { display:flex; gap:8px; flex-wrap:wrap; }
  .chip { border:1px solid var(--line); background:var(--card); border-radius:14px; padding:3px 10px; display:flex; gap:6px; align-items:center; }
  .muted { color:var(--muted); }
  .lagging { color:var(--warn); font-weight:600; } .bad { color:var(--bad); }
  button { font:inherit; font-size:12px; border:1px solid var(--accent); color:var(--accent); background:#fff; border-radius:6px; padding:2px 10px; cursor:pointer; }
  button:hover { background:#eef4ff; }
  button.armed { background:var(--accent); color:#fff; }
  button:disabled { opacity:.55; cursor:default; }
  details > summary { cursor:pointer; }
  details table { margin:6px 0 4px; }
  .banner { background:#fff1f3; border:1px solid #fecdd6; color:var(--bad); border-radius:8px; padding:8px 12px; margin-bottom:14px; }
  .toast { position:fixed; right:20px; bottom:20px; max-width:460px; background:#111827; color:#f9fafb; border-radius:8px; padding:10px 14px; box-shadow:0 4px 14px rgba(0,0,0,.2); }
  .toast.bad { background:var(--bad); }
  label.toggle { font-weight:400; font-size:13px; color:var(--muted); margin-left:12px; }
</style>
</head>
<body>
<header>
  <h1>RaftMQ</h1>
  <span class="where" id="where"></span>
  <span class="live"><span class="dot" id="live-dot"></span><span id="updated">connecting…</span></span>
</header>
<main>
  <div id="banner"></div>
  <section><h2>Nameservers</h2><div class="chips" id="nameservers"></div></section>
  <section><h2>Broker groups <span class="count" id="group-count"></span></h2><div id="clusters"></div></section>
  <section>
    <h2>Topics <span class="count" id="topic-count"></span>
      <label class="toggle"><input type="checkbox" id="show-system"> show system topics</label></h2>
    <div class="card"><table id="topics"></table></div>
  </section>
  <section><h2>Consumer groups <span class="count" id="consumer-count"></span></h2>
    <div class="card"><table id="consumers"></table></div></section>
</main>
<div id="toast"></div>
<script>
"use strict";
const state = { data: null, armed: null, pending: null, open: new Set(), failures: 0 };

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}
const num = (v) => (v === null || v === undefined) ? "–" : Number(v).toLocaleString("en-US");
const ago = (ms) => (ms === null || ms === undefined) ? "–" : ms < 1000 ? ms + " ms" : (ms / 1000).toFixed(1) + " s";
const time = (ms) => ms > 0 ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "–";
function row(cells, attrs) { return el("tr", attrs, cells.map(c => c instanceof Node && c.tagName === "TD" ? c : el("td", {}, c))); }
function td(v, cls, attrs) { return el("td", Object.assign({ class: cls }, attrs || {}), v); }
function heads(names) { return el("tr", {}, names.map(n => el("th", { class: n.startsWith("#") ? "num" : "" }, n.replace(/^#/, "")))); }
function keepOpen(key, details) {
  if (state.open.has(key)) details.open = true;
  details.addEventListener("toggle", () => details.open ? state.open.add(key) : state.open.delete(key));
  return details;
}

function toast(text, bad) {
  const t = document.getElementById("toast");
  t.replaceChildren(el("div", { class: "toast" + (bad ? " bad" : ""), role: "status" }, text));
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.replaceChildren(), 6000);
}

async function transfer(group, node) {
  const a = state.armed;
  if (!a || a.group !== group || a.node !== node || a.until < Date.now()) {
    state.armed = { group, node, until: Date.now() + 5000 };
    render();
    return;
  }
  state.armed = null;
  state.pending = { group, node };
  render();
  try {
    const r = await fetch("/api/leadership-transfer", { method: "POST", headers: { "content-type": "application/json" },
                                                       body: JSON.stringify({ group, nodeId: node }) });
    const body = await r.json().catch(() => ({}));
    if (r.ok) toast(node + " now leads " + group + " (" + body.leaderAddr + ")");
    else toast("transfer of " + group + " to " + node + " failed: " + (body.error || r.status), true);
  } catch (e) {
    toast("transfer of " + group + " to " + node + " failed: " + e, true);
  }
  state.pending = null;
  refresh();
}

function memberRows(g) {
  // The group's leader as the server chose it (the highest term's), and its view of each peer.
  const leader = g.members.map(m => m.state).find(s => s && s.role === "leader" && s.selfId === g.leaderId);
  const progress = {};
  for (const p of (leader && leader.peers) || []) progress[p.id] = p;
  return g.members.map(m => {
    const s = m.state;
    const nodeId = s ? s.selfId : (m.nodeId || (m.peer && m.peer.id));
    const id = nodeId || (s ? "id " + s.brokerId : "id " + m.registeredId);
    const role = s ? String(s.role).toLowerCase() : "down";
    const roleClass = role.includes("master") ? "master" : role;
    let lag = null, contact = null;
    if (s && leader && s.selfId === leader.selfId) {
      lag = 0;
    } else if (leader && nodeId) {
      const p = progress[nodeId] || m.peer;
      if (p && p.matchIndex !== null && p.matchIndex !== undefined) lag = Math.max(0, leader.lastIndex - p.matchIndex);
      if (p) contact = p.lastContactMsAgo;
    }
    let action = "";
    if (g.mode === "raft" && s && s.role !== "leader" && leader) {
      const armed = state.armed && state.armed.group === g.brokerName && state.armed.node === s.selfId && state.armed.until > Date.now();
      const pending = state.pending && state.pending.group === g.brokerName;
      action = el("button", { class: armed ? "armed" : "", disabled: !!pending, "data-transfer": s.selfId,
                              title: "Move " + g.brokerName + "'s leadership to " + s.selfId,
                              onclick: () => transfer(g.brokerName, s.selfId) },
                  pending && state.pending.node === s.selfId ? "transferring…" : armed ? "confirm: make " + s.selfId + " leader" : "make leader");
    }
    const addr = s ? s.brokerAddr : (m.addr || (m.peer && m.peer.addr));
    const lagged = lag !== null && lag > 1000;
    return row([
      el("td", {}, el("strong", {}, id)),
      td(el("span", { class: "badge " + roleClass }, role)),
      td(addr || "–", "muted"),
      td(s ? num(s.term ?? s.epoch) : "–", "num"),
      td(s ? num(s.lastIndex) : "–", "num"),
      td(s && s.mode === "raft" ? num(s.commitIndex) : "–", "num"),
      td(s ? num(s.appliedIndex) : "–", "num"),
      td(lag === null ? "–" : num(lag), "num" + (lagged ? " lagging" : ""), { "data-lag": lag === null ? "" : lag }),
      td(ago(contact), "num"),
      td(m.error ? el("span", { class: "bad" }, m.error) : action),
    ], { "data-node": id, "data-role": role });
  });
}

function renderClusters(d) {
  const box = document.getElementById("clusters");
  const cards = [];
  let groups = 0;
  for (const c of d.clusters || []) {
    for (const g of c.groups) {
      groups++;
      const facts = g.mode === "raft"
        ? (g.leaderId ? "leader " + g.leaderId + " · term " + num(g.term) + " · commit " + num(g.commitIndex) : "no leader")
        : g.mode === "classic" ? "master/slave" : "";
      cards.push(el("div", { class: "card", "data-group": g.brokerName, "data-leader": g.leaderId || "" },
        el("h3", {}, g.brokerName, el("span", { class: "badge" }, g.mode === "raft" ? "Raft" : g.mode),
           el("span", { class: "facts" }, "cluster " + c.name + (facts ? " · " + facts : ""))),
        el("table", {}, heads(["node", "role", "broker address", "#term", "#last index", "#commit", "#applied", "#lag", "#last contact", ""]),
           memberRows(g))));
    }
  }
  document.getElementById("group-count").textContent = "(" + groups + ")";
  box.replaceChildren(...cards);
}

function renderTopics(d) {
  const showSystem = document.getElementById("show-system").checked;
  const topics = (d.topics || []).filter(t => showSystem || !t.system);
  const rows = [heads(["topic", "#queues", "#messages", "groups", "queue offsets"])];
  for (const t of topics) {
    const groups = [...new Set(t.queues.map(q => q.brokerName))];
    const details = keepOpen("topic:" + t.topic, el("details", {}, el("summary", {}, "per queue"),
      el("table", {}, heads(["group", "#queue", "#min", "#max", "last message"]),
         t.queues.map(q => row([q.brokerName, td(q.queueId, "num"), td(num(q.minOffset), "num"), td(num(q.maxOffset), "num"), time(q.lastUpdateTimestamp)])))));
    rows.push(row([el("td", {}, el("strong", {}, t.topic), t.system ? el("span", { class: "muted" }, " system") : ""),
                   td(t.queues.length, "num"), td(num(t.messages), "num", { "data-messages": t.messages }), groups.join(", "),
                   t.error ? el("span", { class: "bad" }, t.error) : details], { "data-topic": t.topic }));
  }
  if (topics.length === 0) rows.push(row([el("td", { colspan: 5, class: "muted" }, "no topics")]));
  const omitted = d.topicsOmitted ? ", " + d.topicsOmitted + " more not shown" : "";
  document.getElementById("topic-count").textContent = "(" + topics.length + omitted + ")";
  document.getElementById("topics").replaceChildren(...rows);
}

function renderConsumers(d) {
  const groups = d.consumerGroups || [];
  const rows = [heads(["group", "#online", "type", "topics", "#lag", "per queue"])];
  for (const g of groups) {
    const details = keepOpen("group:" + g.group, el("details", {}, el("summary", {}, "per queue"),
      el("table", {}, heads(["topic", "group", "#queue", "#broker offset", "#consumer offset", "#lag", "last consumed"]),
         (g.queues || []).map(q => row([q.topic, q.brokerName, td(q.queueId, "num"), td(num(q.brokerOffset), "num"),
                                      td(num(q.consumerOffset), "num"), td(num(q.lag), "num" + (q.lag > 0 ? " lagging" : "")), time(q.lastTimestamp)])))));
    rows.push(row([el("td", {}, el("strong", {}, g.group)), td(num(g.online), "num"),
                   [g.consumeType, g.messageModel].filter(Boolean).join(" · ") || "–", (g.topics || []).join(", ") || "–",
                   td(num(g.lag), "num" + (g.lag > 0 ? " lagging" : ""), { "data-lag": g.lag ?? "" }),
                   g.error ? el("span", { class: "bad" }, g.error) : details], { "data-consumer-group": g.group }));
  }
  if (groups.length === 0) rows.push(row([el("td", { colspan: 6, class: "muted" }, "no consumer groups")]));
  document.getElementById("consumer-count").textContent = "(" + groups.length + ")";
  document.getElementById("consumers").replaceChildren(...rows);
}

function render() {
  const d = state.data;
  if (!d) return;
  document.getElementById("where").textContent = "served by " + d.servedBy.brokerName + " at " + d.servedBy.addr;
  document.getElementById("nameservers").replaceChildren(...(d.nameServers.length ? d.nameServers.map(n =>
    el("span", { class: "chip", "data-nameserver": n.addr, "data-ok": String(n.ok), title: n.error || "answering" },
       el("span", { class: "dot " + (n.ok ? "ok" : "bad") }), n.addr))
    : [el("span", { class: "muted" }, "none configured (namesrvAddr)")]));
  const problems = (d.errors || []);
  document.getElementById("banner").replaceChildren(...problems.map(p => el("div", { class: "banner" }, p)));
  renderClusters(d);
  renderTopics(d);
  renderConsumers(d);
}

// Redrawing replaces the tables: not while a button is pressed, or its click would be lost.
let pointerDown = false, renderWaiting = false;
document.addEventListener("pointerdown", () => { pointerDown = true; });
document.addEventListener("pointerup", () => {
  pointerDown = false;
  if (renderWaiting) setTimeout(() => { renderWaiting = false; render(); }, 0);
});
function redraw() { if (pointerDown) renderWaiting = true; else render(); }

async function refresh() {
  clearTimeout(refresh.timer);
  if (refresh.running) return;
  refresh.running = true;
  const dot = document.getElementById("live-dot"), updated = document.getElementById("updated");
  const abort = new AbortController();
  const timeout = setTimeout(() => abort.abort(), 5000);
  try {
    const r = await fetch("/api/overview", { cache: "no-store", signal: abort.signal });
    if (!r.ok) throw new Error("HTTP " + r.status);
    state.data = await r.json();
    state.failures = 0;
    const age = Math.round((Date.now() - state.data.generatedAtMs) / 1000);
    dot.className = "dot " + (age > 5 ? "bad" : "ok");
    updated.textContent = (age > 5 ? "stale: gathered " + age + " s ago · " : "live · ") + new Date(state.data.generatedAtMs).toLocaleTimeString("en-GB");
    redraw();
    document.body.setAttribute("data-loaded", "true");
  } catch (e) {
    state.failures++;
    dot.className = "dot bad";
    updated.textContent = "not answering (" + (e.name === "AbortError" ? "no answer within 5 s" : e.message) + ")";
  } finally {
    clearTimeout(timeout);
    refresh.running = false;
  }
  refresh.timer = setTimeout(refresh, state.failures ? Math.min(5000, 1000 * state.failures) : 1000);
}
document.getElementById("show-system").addEventListener("change", render);
refresh();
</script>
</body>
</html>
"""#
}
