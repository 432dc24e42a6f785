// The Trellis dashboard: polls the control plane's admin API every 2 s and redraws the page from
// its JSON. No dependencies; every text from the API goes into the page as text, never as HTML.
"use strict";

const POLL_MS = 2000;
const WINDOW = "10s";
const HISTORY_MS = 5 * 60 * 1000;
// Chart points further apart than this are not joined (the page or the mesh was away).
const GAP_MS = 3 * POLL_MS + 1000;
const SVG_NS = "http://www.w3.org/2000/svg";
const EXTERNAL = "(external)";

// Per service key, the points charted: {t, rps, success, p50, p99}, oldest first.
const history = new Map();
let backfilled = false;

// ---- DOM helpers ----

function build(make, tag, attrs, children) {
  const el = make(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== null && value !== undefined && value !== false) el.setAttribute(name, String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function h(tag, attrs, ...children) {
  return build((t) => document.createElement(t), tag, attrs, children);
}

function s(tag, attrs, ...children) {
  return build((t) => document.createElementNS(SVG_NS, t), tag, attrs, children);
}

function fill(id, ...children) {
  document.getElementById(id).replaceChildren(...children.flat(Infinity).filter(Boolean));
}

function table(id, headers, rows, empty) {
  const head = h("thead", {}, h("tr", {}, headers.map((c) => h("th", {}, c))));
  const body = rows.length
    ? rows
    : [h("tr", {}, h("td", { class: "empty", colspan: headers.length }, empty))];
  fill(id, head, h("tbody", {}, body));
}

// ---- formatting ----

function key(name, namespace) {
  return `${name}.${namespace}`;
}

function health(success) {
  if (success === null || success === undefined) return "idle";
  if (success >= 0.99) return "ok";
  if (success >= 0.95) return "warn";
  return "bad";
}

function rps(x) {
  if (x === null || x === undefined) return "–";
  return x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2);
}

function pct(x) {
  if (x === null || x === undefined) return "–";
  return x >= 1 ? "100%" : `${(x * 100).toFixed(2)}%`;
}

function ms(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const m = seconds * 1000;
  if (m === 0) return "0 ms";
  if (m >= 1000) return `${(m / 1000).toFixed(2)} s`;
  return `${m >= 10 ? m.toFixed(0) : m >= 1 ? m.toFixed(1) : m.toFixed(2)} ms`;
}

function clock(unix) {
  return new Date(unix * 1000).toLocaleTimeString([], { hour12: false });
}

function until(unix) {
  const left = unix - Date.now() / 1000;
  if (left <= 0) return "expired";
  const hours = Math.floor(left / 3600);
  const minutes = Math.floor((left % 3600) / 60);
  if (hours >= 48) return `in ${Math.floor(hours / 24)}d ${hours % 24}h`;
  return hours > 0 ? `in ${hours}h ${minutes}m` : `in ${minutes}m ${Math.floor(left % 60)}s`;
}

function shortIdentity(id) {
  return id.replace(/^spiffe:\/\/[^/]+/, "");
}

// ---- data ----

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

function record(serviceKey, t, row) {
  let points = history.get(serviceKey);
  if (!points) history.set(serviceKey, (points = []));
  if (points.length && points[points.length - 1].t >= t) return;
  points.push({
    t,
    rps: row.rps,
    success: row.success_rate,
    p50: row.latency_p50_seconds,
    p99: row.latency_p99_seconds,
  });
  while (points.length && points[0].t < t - HISTORY_MS) points.shift();
}

// The control plane keeps two minutes: the first poll fills the charts from that.
async function backfill() {
  const now = Date.now();
  const series = await getJson(`/api/stats/series?by=service&window=${WINDOW}&step=2s`);
  for (const point of series.points) {
    for (const row of point.rows) {
      record(key(row.service, row.namespace), now - point.age_seconds * 1000, row);
    }
  }
  backfilled = true;
}

async function poll() {
  if (!backfilled) await backfill();
  const [services, workloads, proxies, routes, config, identity, byService, byEdge] =
    await Promise.all([
      getJson("/api/services"),
      getJson("/api/workloads"),
      getJson("/api/proxies"),
      getJson("/api/routes"),
      getJson("/api/config"),
      getJson("/api/identity"),
      getJson(`/api/stats?by=service&window=${WINDOW}`),
      getJson(`/api/stats?by=edge&window=${WINDOW}`),
    ]);
  const now = Date.now();
  for (const row of byService.rows) record(key(row.service, row.namespace), now, row);
  const data = { services, workloads, proxies, routes, config, identity, byService, byEdge };
  const graph = graphModel(data);
  renderSummary(data);
  renderGraph(graph);
  renderServiceTable(byService.rows);
  renderEdgeTable(byEdge.rows);
  renderCharts(graph);
  renderWorkloads(data);
  renderRoutes(routes);
  renderPolicies(config.resources);
  renderProblems(config, proxies);
}

// ---- the service graph ----

// A Service whose endpoints all belong to the workloads of one other service (a canary's
// `catalog-v1`, say) is drawn as that service: calls to it are calls to that service.
function owners(services, workloads) {
  const byNode = new Map(workloads.map((w) => [w.node_id, key(w.service, w.namespace)]));
  const apps = new Set(byNode.values());
  const owner = new Map();
  for (const svc of services) {
    const k = key(svc.name, svc.namespace);
    if (apps.has(k)) continue;
    const of = new Set(svc.endpoints.map((e) => byNode.get(e.node_id)).filter(Boolean));
    if (of.size === 1) owner.set(k, [...of][0]);
  }
  return owner;
}

function graphModel({ services, workloads, byService, byEdge }) {
  const owner = owners(services, workloads);
  const nodes = new Map();
  const node = (name, namespace) => {
    const k = name ? key(name, namespace) : EXTERNAL;
    if (!nodes.has(k)) nodes.set(k, { key: k, name: name || EXTERNAL, namespace, row: null });
    return nodes.get(k);
  };
  for (const row of byService.rows) node(row.service, row.namespace).row = row;
  const names = new Map([...nodes.values()].map((n) => [n.key, n]));
  const edges = new Map();
  for (const row of byEdge.rows) {
    const from = node(row.source_service, row.source_namespace);
    const called = row.service ? key(row.service, row.namespace) : EXTERNAL;
    const toKey = owner.get(called) || called;
    const to = names.get(toKey) || node(row.service, row.namespace);
    const k = `${from.key}->${to.key}`;
    if (!edges.has(k)) {
      edges.set(k, { from, to, requests: 0, failures: 0, rps: 0, via: [] });
    }
    const edge = edges.get(k);
    edge.requests += row.requests;
    edge.failures += row.failures;
    edge.rps += row.rps;
    if (called !== to.key) edge.via.push(row.service);
  }
  for (const edge of edges.values()) {
    edge.success = edge.requests > 0 ? 1 - edge.failures / edge.requests : null;
    edge.from.sent = (edge.from.sent || { requests: 0, failures: 0, rps: 0 });
    edge.from.sent.requests += edge.requests;
    edge.from.sent.failures += edge.failures;
    edge.from.sent.rps += edge.rps;
  }
  return { nodes: [...nodes.values()], edges: [...edges.values()] };
}

// Columns by longest call path from the callers nobody calls; rows by name. Deterministic.
function layout(graph) {
  const depth = new Map(graph.nodes.map((n) => [n.key, 0]));
  const limit = graph.nodes.length - 1;
  for (let round = 0; round < graph.nodes.length; round++) {
    let changed = false;
    for (const e of graph.edges) {
      if (e.from === e.to) continue;
      const d = Math.min(depth.get(e.from.key) + 1, limit);
      if (d > depth.get(e.to.key)) {
        depth.set(e.to.key, d);
        changed = true;
      }
    }
    if (!changed) break;
  }
  const columns = [];
  for (const n of graph.nodes) (columns[depth.get(n.key)] ||= []).push(n);
  const used = columns.filter(Boolean);
  used.forEach((col) => col.sort((a, b) => a.key.localeCompare(b.key)));
  return used;
}

const NODE_W = 204;
const NODE_H = 58;
const COL_GAP = 176;
const ROW_GAP = 56;
const MARGIN = 20;

function renderGraph(graph) {
  const svg = document.getElementById("graph");
  const columns = layout(graph);
  const tallest = Math.max(1, ...columns.map((c) => c.length));
  const width = MARGIN * 2 + columns.length * NODE_W + Math.max(0, columns.length - 1) * COL_GAP;
  const height = MARGIN * 2 + tallest * NODE_H + (tallest - 1) * ROW_GAP;
  const at = new Map();
  columns.forEach((col, c) => {
    const offset = ((tallest - col.length) * (NODE_H + ROW_GAP)) / 2;
    col.forEach((n, r) => {
      at.set(n.key, {
        x: MARGIN + c * (NODE_W + COL_GAP),
        y: MARGIN + offset + r * (NODE_H + ROW_GAP),
      });
    });
  });
  // Drawn at its own size (text stays readable), shrunk only to fit the panel.
  svg.setAttribute("viewBox", `0 0 ${Math.max(width, 320)} ${height}`);
  svg.setAttribute("width", Math.max(width, 320));
  svg.setAttribute("height", height);
  svg.setAttribute("data-nodes", graph.nodes.length);
  svg.setAttribute("data-edges", graph.edges.length);
  const markers = ["ok", "warn", "bad", "idle"].map((c) =>
    s("marker", { id: `arrow-${c}`, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 11,
      markerHeight: 11, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" },
      s("path", { d: "M0,0 L10,5 L0,10 z", class: `arrow h-${c}` })),
  );
  const edges = graph.edges.map((e) => drawEdge(e, at.get(e.from.key), at.get(e.to.key)));
  const labels = graph.edges.map((e) => drawEdgeLabel(e, at.get(e.from.key), at.get(e.to.key)));
  const nodes = graph.nodes.map((n) => drawNode(n, at.get(n.key)));
  if (!graph.nodes.length) {
    nodes.push(s("text", { x: MARGIN, y: MARGIN + 20, class: "empty" }, "No meshed services yet"));
  }
  svg.replaceChildren(s("defs", {}, markers), ...edges, ...nodes, ...labels);
}

function edgePath(a, b) {
  if (!a || !b) return null;
  if (a === b) {
    const x = a.x + NODE_W / 2;
    return { d: `M${x - 20},${a.y} C${x - 40},${a.y - 50} ${x + 40},${a.y - 50} ${x + 20},${a.y}`,
      mid: { x, y: a.y - 42 } };
  }
  const forward = b.x > a.x;
  const x1 = forward ? a.x + NODE_W : a.x + NODE_W / 2;
  const y1 = forward ? a.y + NODE_H / 2 : a.y + NODE_H;
  const x2 = forward ? b.x : b.x + NODE_W / 2;
  const y2 = forward ? b.y + NODE_H / 2 : b.y + NODE_H;
  const bend = forward ? Math.max(40, (x2 - x1) / 2) : 0;
  const drop = forward ? 0 : 60;
  const c = [[x1, y1], [x1 + bend, y1 + drop], [x2 - bend, y2 + drop], [x2, y2]];
  // Labels sit where a fanned-out edge has flattened towards its callee, apart from the others.
  const t = forward ? 0.7 : 0.5;
  const along = (i) => (1 - t) ** 3 * c[0][i] + 3 * (1 - t) ** 2 * t * c[1][i]
    + 3 * (1 - t) * t ** 2 * c[2][i] + t ** 3 * c[3][i];
  return { d: `M${c[0]} C${c[1]} ${c[2]} ${c[3]}`, mid: { x: along(0), y: along(1) } };
}

function edgeName(e) {
  return `${e.from.name}->${e.to.name}`;
}

function drawEdge(e, a, b) {
  const path = edgePath(a, b);
  if (!path) return null;
  const c = health(e.success);
  const width = 1.5 + Math.min(4, Math.log10(1 + e.rps) * 2);
  return s("g", { class: `edge h-${c}`, "data-edge": edgeName(e), "data-rps": e.rps.toFixed(3),
      "data-success": e.success === null ? "" : e.success.toFixed(4) },
    s("title", {}, `${edgeName(e)}${e.via.length ? ` (via ${e.via.join(", ")})` : ""}`),
    s("path", { d: path.d, class: "edge-line", "stroke-width": width.toFixed(1),
      "marker-end": `url(#arrow-${c})` }));
}

function drawEdgeLabel(e, a, b) {
  const path = edgePath(a, b);
  if (!path) return null;
  return s("text", { x: path.mid.x, y: path.mid.y - 6, class: "edge-label",
      "text-anchor": "middle", "data-edge-label": edgeName(e) },
    `${rps(e.rps)} rps · ${pct(e.success)}`);
}

// A service is coloured by the requests it answered or, when it only calls others (a load
// generator), by the calls it made.
function drawNode(n, p) {
  const row = n.row;
  const sent = n.sent && n.sent.requests > 0 ? n.sent : null;
  let success = null;
  let detail = "not meshed";
  if (row && row.requests > 0) {
    success = row.success_rate;
    detail = `${rps(row.rps)} rps · ${pct(success)} · p99 ${ms(row.latency_p99_seconds)}`;
  } else if (sent) {
    success = 1 - sent.failures / sent.requests;
    detail = `calls ${rps(sent.rps)} rps · ${pct(success)}`;
  } else if (row) {
    detail = `${row.meshed} ${row.meshed === 1 ? "proxy" : "proxies"} · idle`;
  }
  const c = health(success);
  const title = n.namespace && n.namespace !== "default" ? `${n.name}.${n.namespace}` : n.name;
  return s("g", { class: `node h-${c}`, "data-service": n.name, "data-namespace": n.namespace || "",
      transform: `translate(${p.x},${p.y})` },
    s("rect", { width: NODE_W, height: NODE_H, rx: 10, class: "node-box" }),
    s("rect", { width: 6, height: NODE_H - 16, x: 8, y: 8, rx: 3, class: "node-mark" }),
    s("text", { x: 22, y: 24, class: "node-name" }, title),
    s("text", { x: 22, y: 44, class: "node-detail" }, detail));
}

// ---- tables ----

function renderSummary({ services, workloads, proxies, config }) {
  const synced = proxies.filter((p) => p.synced).length;
  const status = document.getElementById("status");
  status.textContent = `live · ${new Date().toLocaleTimeString([], { hour12: false })}`;
  status.className = "status ok";
  document.body.dataset.state = "live";
  delete document.body.dataset.error;
  document.getElementById("summary").textContent = [
    `${services.length} services`,
    `${workloads.length} workloads`,
    `${synced}/${proxies.length} proxies synced`,
    `config generation ${config.generation}`,
  ].join(" · ");
}

function cell(value, cls) {
  return h("td", { class: cls }, value);
}

function signalCells(row) {
  const c = health(row.success_rate);
  return [
    cell(rps(row.rps), "num"),
    cell(pct(row.success_rate), `num t-${c}`),
    cell(ms(row.latency_p50_seconds), "num"),
    cell(ms(row.latency_p99_seconds), "num"),
  ];
}

function renderServiceTable(rows) {
  table("services", ["service", "meshed", "rps", "success", "p50", "p99"],
    rows.map((r) => h("tr", { "data-row": r.service },
      cell(r.service), cell(r.meshed, "num"), signalCells(r))),
    "no meshed services");
}

function renderEdgeTable(rows) {
  table("edges", ["from", "to", "rps", "success", "p50", "p99"],
    rows.map((r) => h("tr", {}, cell(r.source_service), cell(r.service || EXTERNAL),
      signalCells(r))),
    "no calls between services in the window");
}

function renderWorkloads({ workloads, proxies, identity }) {
  const expiry = new Map();
  for (const svid of identity.issued) {
    expiry.set(svid.identity, Math.max(expiry.get(svid.identity) || 0, svid.not_after_unix));
  }
  const byNode = new Map(proxies.map((p) => [p.node_id, p]));
  const sorted = [...workloads].sort((a, b) =>
    a.service.localeCompare(b.service) || a.node_id.localeCompare(b.node_id));
  const rows = sorted.map((w) => {
    const proxy = byNode.get(w.node_id);
    const expires = expiry.get(w.identity);
    const xds = !proxy ? "–" : proxy.synced ? "synced" : "syncing";
    return h("tr", { "data-workload": w.node_id },
      cell(w.node_id), cell(w.service), cell(w.labels.version || "–"), cell(w.address, "mono"),
      h("td", { class: "mono", title: w.identity }, shortIdentity(w.identity)),
      expires
        ? h("td", { title: new Date(expires * 1000).toISOString() }, until(expires))
        : cell("no certificate", "t-idle"),
      cell(xds, proxy && proxy.synced ? "t-ok" : "t-warn"),
      cell(proxy ? proxy.nacks : "–", proxy && proxy.nacks ? "num t-bad" : "num"));
  });
  table("workloads", ["workload", "service", "version", "address", "identity", "cert expires",
    "xDS", "NACKs"], rows, "no workloads connected");
  const roots = identity.roots.map((r) =>
    `root ${r.fingerprint.slice(0, 12)} ${r.state.toLowerCase()}, expires ${until(r.not_after_unix)}`);
  document.getElementById("roots").textContent = roots.join(" · ");
}

function condition(c) {
  const ok = c.status === "True";
  return h("span", { class: `pill ${ok ? "t-ok" : "t-bad"}`, title: c.message },
    ok ? c.type : `${c.type}: ${c.reason}`);
}

function renderRoutes(routes) {
  const rows = routes.map((r) => {
    const parents = r.parents.map((p) => p.parentRef.name).join(", ");
    const backends = r.rules
      .map((rule) => rule.backendRefs.map((b) => `${b.name} ${b.weight}`).join(" · "))
      .filter(Boolean)
      .join(" | ");
    const conditions = r.parents.flatMap((p) => p.conditions);
    const failing = conditions.filter((c) => c.status !== "True");
    return h("tr", { "data-route": r.name },
      cell(r.kind), cell(r.name), cell(parents), cell(backends || "–"),
      h("td", {}, conditions.map(condition),
        failing.map((c) => h("div", { class: "note" }, c.message))));
  });
  table("routes", ["kind", "name", "parent", "backends (weight)", "status"], rows, "no routes");
}

function targets(spec) {
  return (spec.targetRefs || []).map((t) => t.name).join(", ") || "–";
}

function authorizationSummary(spec) {
  const from = spec.rules.flatMap((r) => (r.from || []).flatMap((f) => f.identities || []));
  const to = spec.rules.flatMap((r) => (r.to || []).flatMap((o) => o.methods || []));
  const parts = [`${spec.action} ${spec.rules.length} rule${spec.rules.length === 1 ? "" : "s"}`];
  if (from.length) parts.push(`from ${from.map(shortIdentity).join(", ")}`);
  if (to.length) parts.push(to.join(", "));
  return parts.join(" · ");
}

function renderPolicies(resources) {
  const rows = [];
  const add = (kind, item, summary) => rows.push(h("tr", { "data-policy": item.metadata.name },
    cell(kind), cell(item.metadata.name), cell(targets(item.spec)), cell(summary)));
  for (const m of resources.meshConfigs || []) {
    add("MeshConfig", m, `mTLS ${(m.spec.mtls && m.spec.mtls.mode) || "default"}`);
  }
  for (const p of resources.authorizationPolicies || []) {
    add("AuthorizationPolicy", p, authorizationSummary(p.spec));
  }
  for (const p of resources.backendPolicies || []) {
    add("BackendPolicy", p, Object.keys(p.spec).filter((k) => k !== "targetRefs").join(", "));
  }
  for (const f of resources.faultInjections || []) {
    add("FaultInjection", f, Object.keys(f.spec).join(", ") || "–");
  }
  for (const r of resources.rateLimits || []) {
    add("RateLimit", r, `${r.spec.requests} per ${r.spec.per}`);
  }
  table("policies", ["kind", "name", "targets", "what"], rows, "no policies");
}

function renderProblems(config, proxies) {
  const errors = config.errors.length
    ? h("div", { class: "problem t-bad", "data-config-errors": config.errors.length },
      h("strong", {}, "The last config change was rejected; generation ",
        String(config.generation), " keeps serving:"),
      h("ul", {}, config.errors.map((e) => h("li", { class: "mono" }, e))))
    : h("p", { class: "t-ok", "data-config-errors": 0 },
      `No config errors: generation ${config.generation}, accepted at ${clock(config.loaded_at_unix)}.`);
  const nacked = proxies.filter((p) => p.last_nack)
    .sort((a, b) => b.last_nack.at_unix - a.last_nack.at_unix);
  const nacks = nacked.length
    ? h("table", {}, h("thead", {}, h("tr", {}, ["proxy", "type", "version", "at", "error"]
      .map((c) => h("th", {}, c)))), h("tbody", {}, nacked.map((p) => h("tr", {},
      cell(p.node_id), cell(p.last_nack.type), cell(p.last_nack.version.slice(0, 12), "mono"),
      cell(clock(p.last_nack.at_unix)), cell(p.last_nack.error, "mono t-bad")))))
    : h("p", { class: "t-ok" }, "No proxy has rejected a push.");
  fill("problems", errors, nacks);
}

// ---- charts ----

function renderCharts(graph) {
  // Services that answered requests in the charted minutes (not a load generator, say).
  const services = graph.nodes
    .filter((n) => n.row && (history.get(n.key) || []).some((p) => p.rps > 0))
    .map((n) => n.key)
    .sort();
  const cards = services.map((k) => {
    const points = history.get(k);
    const last = points.length ? points[points.length - 1] : null;
    const name = k.endsWith(".default") ? k.slice(0, -".default".length) : k;
    return h("div", { class: "chart-card", "data-chart-service": name },
      h("h3", {}, name),
      chart("requests / s", points, [{ get: (p) => p.rps, cls: "line-rps" }],
        { fmt: rps, floor: 0, current: last && `${rps(last.rps)} rps` }),
      chart("success rate", points, [{ get: (p) => p.success, cls: "line-success" }],
        { fmt: pct, tick: (x) => `${(x * 100).toFixed(0)}%`, floor: successFloor(points), ceiling: 1,
          current: last && pct(last.success) }),
      chart(["latency ", h("span", { class: "key-p50" }, "p50"), " / ",
        h("span", { class: "key-p99" }, "p99")], points, [
        { get: (p) => p.p50, cls: "line-p50" },
        { get: (p) => p.p99, cls: "line-p99" },
      ], { fmt: ms, floor: 0, current: last && `${ms(last.p50)} / ${ms(last.p99)}` }));
  });
  fill("charts", cards.length ? cards : h("p", { class: "empty" }, "no service has answered requests yet"));
}

function successFloor(points) {
  const values = points.map((p) => p.success).filter((v) => v !== null && v !== undefined);
  const lowest = values.length ? Math.min(...values) : 1;
  if (lowest >= 0.99) return 0.98;
  if (lowest >= 0.9) return 0.9;
  return Math.floor(lowest * 10) / 10;
}

function niceCeiling(x) {
  if (!(x > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(x));
  for (const step of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (x <= step * power) return step * power;
  return 10 * power;
}

const CW = 300;
const CH = 92;
const PAD = { left: 54, right: 8, top: 8, bottom: 18 };

function chart(title, points, lines, opts) {
  const now = Date.now();
  const start = Math.min(now - 60 * 1000, points.length ? points[0].t : now);
  const values = lines.flatMap((l) => points.map(l.get)).filter((v) => v !== null && v !== undefined);
  const floor = opts.floor;
  const ceiling = opts.ceiling !== undefined ? opts.ceiling : niceCeiling(Math.max(0, ...values) * 1.1);
  const x = (t) => PAD.left + ((t - start) / (now - start)) * (CW - PAD.left - PAD.right);
  const y = (v) => {
    const clamped = Math.min(Math.max(v, floor), ceiling);
    const share = ceiling > floor ? (clamped - floor) / (ceiling - floor) : 0;
    return CH - PAD.bottom - share * (CH - PAD.top - PAD.bottom);
  };
  const paths = lines.map((line) => {
    let d = "";
    let previous = null;
    for (const p of points) {
      const v = line.get(p);
      if (v === null || v === undefined) {
        previous = null;
        continue;
      }
      const joined = previous && p.t - previous.t <= GAP_MS;
      d += `${joined ? "L" : "M"}${x(p.t).toFixed(1)},${y(v).toFixed(1)}`;
      previous = p;
    }
    return d ? s("path", { d, class: `line ${line.cls}` }) : null;
  });
  const minutes = Math.round((now - start) / 60000);
  return h("figure", { class: "chart" },
    h("figcaption", {}, h("span", {}, title), h("span", { class: "current" }, opts.current || "–")),
    s("svg", { viewBox: `0 0 ${CW} ${CH}`, class: "chart-svg" },
      s("line", { x1: PAD.left, x2: CW - PAD.right, y1: y(ceiling), y2: y(ceiling), class: "grid" }),
      s("line", { x1: PAD.left, x2: CW - PAD.right, y1: y(floor), y2: y(floor), class: "axis" }),
      s("text", { x: PAD.left - 6, y: y(ceiling) + 4, class: "tick", "text-anchor": "end" },
        (opts.tick || opts.fmt)(ceiling)),
      s("text", { x: PAD.left - 6, y: y(floor), class: "tick", "text-anchor": "end" },
        (opts.tick || opts.fmt)(floor)),
      s("text", { x: PAD.left, y: CH - 3, class: "tick" }, `−${minutes} min`),
      s("text", { x: CW - PAD.right, y: CH - 3, class: "tick", "text-anchor": "end" }, "now"),
      paths));
}

// ---- the loop ----

async function tick() {
  try {
    await poll();
  } catch (e) {
    const status = document.getElementById("status");
    status.textContent = `control plane unreachable: ${e.message}`;
    status.className = "status bad";
    document.body.dataset.state = "error";
    document.body.dataset.error = e.message;
  } finally {
    setTimeout(tick, POLL_MS);
  }
}

tick();
