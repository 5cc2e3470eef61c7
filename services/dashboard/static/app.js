// The dashboard page: polls /api/graph and redraws the service graph (SVG) and the tables; no libraries.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const NODE_W = 150, NODE_H = 44;

function el(name, attrs, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Columns by call depth: callers left, callees right; cycles stop at the node count.
function layout(nodes, edges, width, height) {
  const depth = Object.fromEntries(nodes.map((n) => [n.id, 0]));
  for (let round = 0; round < nodes.length; round++) {
    let changed = false;
    for (const e of edges) {
      if (e.source !== e.target && depth[e.target] <= depth[e.source]) {
        depth[e.target] = depth[e.source] + 1;
        changed = true;
      }
    }
    if (!changed) break;
  }
  const columns = {};
  for (const n of nodes) (columns[depth[n.id]] = columns[depth[n.id]] || []).push(n);
  const count = Math.max(1, Object.keys(columns).length);
  const at = {};
  for (const [col, members] of Object.entries(columns)) {
    members.forEach((n, i) => {
      at[n.id] = {
        x: 20 + (Number(col) + 0.5) * ((width - 40) / count),
        y: (i + 0.5) * (height / members.length),
      };
    });
  }
  return at;
}

function fmtEdge(e) {
  const p99 = e.p99Ms === null ? "-" : `${e.p99Ms} ms`;
  return `${e.rps} rps · ${(e.errorRate * 100).toFixed(1)}% err · p99 ${p99} · ${e.mtls ? "mTLS" : "plain"}`;
}

function drawGraph(view) {
  const svg = document.getElementById("graph");
  const width = Number(svg.getAttribute("width")), height = Number(svg.getAttribute("height"));
  const at = layout(view.nodes, view.edges, width, height);
  const edgesG = document.getElementById("edges"), nodesG = document.getElementById("nodes");
  edgesG.replaceChildren();
  nodesG.replaceChildren();
  for (const e of view.edges) {
    const a = at[e.source], b = at[e.target];
    if (!a || !b) continue;
    const classes = ["edge"];
    if (e.errorRate > 0.05) classes.push("failing");
    if (e.rps === 0) classes.push("idle");
    const g = el("g", { class: classes.join(" "), "data-source": e.source, "data-target": e.target,
      "data-rps": e.rps, "data-error-rate": e.errorRate, "data-mtls": e.mtls, "data-p99": e.p99Ms ?? "" });
    const dx = b.x - a.x, dy = b.y - a.y, len = Math.max(1, Math.hypot(dx, dy));
    const sx = a.x + (dx / len) * NODE_W / 2, sy = a.y + (dy / len) * NODE_H / 2;
    const tx = b.x - (dx / len) * NODE_W / 2, ty = b.y - (dy / len) * NODE_H / 2;
    g.append(el("line", { x1: sx, y1: sy, x2: tx, y2: ty, "marker-end": "url(#arrow)" }));
    g.append(el("text", { x: (sx + tx) / 2, y: (sy + ty) / 2 - 6, "text-anchor": "middle" }, fmtEdge(e)));
    edgesG.append(g);
  }
  for (const n of view.nodes) {
    const p = at[n.id];
    const synced = n.proxies.every((x) => x.state === "SYNCED");
    const g = el("g", { class: synced ? "node" : "node unsynced", "data-id": n.id,
      transform: `translate(${p.x - NODE_W / 2},${p.y - NODE_H / 2})` });
    g.append(el("rect", { width: NODE_W, height: NODE_H }));
    g.append(el("text", { x: NODE_W / 2, y: 18 }, n.app));
    g.append(el("text", { x: NODE_W / 2, y: 34 }, `${n.version} · ${n.proxies.length} proxy`));
    nodesG.append(g);
  }
}

function row(cells, cls) {
  const tr = document.createElement("tr");
  cells.forEach((text, i) => {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls && cls[i]) td.className = cls[i];
    tr.append(td);
  });
  return tr;
}

function drawTables(view) {
  const proxies = document.querySelector("#proxies tbody");
  proxies.replaceChildren(...view.nodes.flatMap((n) => n.proxies.map((p) =>
    row([p.id, n.id, p.state, p.running, p.healthy ? "passing" : "failing"], [null, null, p.state]))));
  const changes = document.querySelector("#changes tbody");
  changes.replaceChildren(...view.configChanges.map((c) => row([
    String(c.revision), c.operation, `${c.kind} ${c.namespace}/${c.name}`,
    c.created ? new Date(c.created * 1000).toISOString().replace("T", " ").slice(0, 19) : "-",
  ])));
  document.getElementById("problems").replaceChildren(...view.problems.map((p) => {
    const li = document.createElement("li");
    li.textContent = p;
    return li;
  }));
  document.getElementById("updated").textContent = view.generatedAt
    ? `updated ${new Date(view.generatedAt * 1000).toISOString().slice(11, 19)} UTC` : "waiting for the first scrape…";
  document.getElementById("source").textContent = view.dataSource ? `data: ${view.dataSource}` : "";
}

async function refresh() {
  let interval = 2;
  try {
    const reply = await fetch("/api/graph", { cache: "no-store" });
    const view = await reply.json();
    interval = Math.max(0.5, Math.min(view.interval || 2, 5));
    drawGraph(view);
    drawTables(view);
    document.body.dataset.generatedAt = view.generatedAt || "";
  } catch (err) {
    document.getElementById("updated").textContent = `dashboard unreachable: ${err}`;
  }
  setTimeout(refresh, interval * 1000);
}

refresh();
