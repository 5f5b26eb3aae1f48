"""The ``resgrad watch`` page: one HTML document, its style and script inline (no CDN, no
network but its own server's ``/data``). It polls ``/data`` with the byte offset of the monitor
file read so far and draws, on canvas and SVG:

- the layer-by-step heat map of gradient norms, log colour scale (one row per layer: the
  parameter gradients of a module combined as sqrt(sum of squares); other row kinds by name),
  a selector for every row kind the file holds;
- each residual unit's latest values: the skip/branch shares of the gradient at its input
  when the monitor writes them, else ‖∂L/∂x_l‖ at each unit's input;
- the loss curves from ``metrics.jsonl`` (train and test loss per epoch);
- the alarms (the run's own lines and the ones the server judges on the rows).

``data-steps`` / ``data-layers`` on the heat map's canvas say what it drew (the browser test
reads them).
"""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>resgrad watch: __TITLE__</title>
<style>
:root { --res: #1f5fa8; --ink: #1d1d1f; --muted: #5f6368; --line: #e3e5e8; --panel: #f6f7f9;
        --ok: #1e7b45; --bad: #b3261e; --mid: #9a6700; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.45;
       font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.layout { max-width: 1240px; margin: 0 auto; padding: 18px 20px 48px; }
header { border-bottom: 1px solid var(--line); margin-bottom: 10px; }
h1 { font-size: 1.45rem; margin: 0 0 2px; }
h2 { font-size: 1.1rem; border-bottom: 1px solid var(--line); padding-bottom: 3px; margin: 22px 0 10px; }
.sub, .muted { color: var(--muted); }
.sub { margin: 0 0 10px; font-size: .92rem; }
code { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: .86em; }
#alarms .alarm { background: #fbe4e2; border-left: 4px solid var(--bad); padding: 6px 12px; border-radius: 6px;
                 margin: 6px 0; }
#alarms .quiet { background: #e3f4ea; border-left: 4px solid var(--ok); padding: 6px 12px; border-radius: 6px; }
.badge { display: inline-block; font-size: .74rem; font-weight: 600; padding: 0 7px; border-radius: 10px;
         background: var(--bad); color: #fff; margin-right: 6px; }
.row { display: flex; gap: 28px; flex-wrap: wrap; align-items: flex-start; }
.col { flex: 1 1 480px; min-width: 0; }
#heatwrap { position: relative; }
#heat { display: block; width: 100%; }
#tip { position: absolute; pointer-events: none; background: rgba(29,29,31,.9); color: #fff; font-size: .8rem;
       padding: 3px 7px; border-radius: 4px; white-space: nowrap; display: none; }
svg text { font-size: 11px; fill: var(--ink); }
svg .axis { stroke: #9aa0a6; stroke-width: 1; }
svg .grid { stroke: var(--line); stroke-width: 1; }
select { font: inherit; }
.legend span { display: inline-block; margin-right: 14px; font-size: .85rem; }
.sw { display: inline-block; width: 12px; height: 12px; border-radius: 2px; vertical-align: -1px; margin-right: 4px; }
</style></head>
<body><div class="layout">
<header><h1>resgrad watch</h1>
<p class="sub"><code id="src">__TITLE__</code> &middot; <span id="status">connecting&hellip;</span></p></header>
<section><h2>Alarms</h2><div id="alarms"><p class="muted">none yet</p></div></section>
<section><h2>Gradient norms, layer by step</h2>
<p class="sub">Rows: <select id="kind"></select> <span id="kindnote"></span>. Colour: log<sub>10</sub> of the norm
(viridis, dark = small); grey = exactly 0; red = NaN/Inf.</p>
<div id="heatwrap"><canvas id="heat" data-steps="0" data-layers="0" width="1200" height="120"></canvas>
<div id="tip"></div></div>
<canvas id="bar" width="1200" height="44" style="display:block;width:100%"></canvas>
</section>
<div class="row">
<section class="col"><h2 id="unitstitle">Residual units</h2><p class="sub" id="unitsnote"></p>
<svg id="units" width="100%" height="240"></svg></section>
<section class="col"><h2>Loss</h2><p class="sub" id="lossnote">from <code>metrics.jsonl</code>, one point per epoch</p>
<svg id="loss" width="100%" height="240"></svg>
<div class="legend" id="losslegend"></div></section>
</div>
<footer class="muted" style="margin-top:28px;font-size:.82rem">Served by <code>resgrad watch</code> on 127.0.0.1
only; the page needs no network. It polls the server every second and redraws as rows land.</footer>
</div>
<script>
"use strict";
const VIRIDIS = ["#440154","#482878","#3e4989","#31688e","#26828e","#1f9e89","#35b779","#6ece58","#b5de2b","#fde725"];
const SKIP_KINDS = ["skip"], BRANCH_KINDS = ["branch"];  // per-unit split of the gradient at a unit's input
const COMBINE = {param: true, weight: true};  // kinds whose rows are parameters: one row per module
const st = {gen: null, offset: 0, kinds: new Map(), metrics: [], losses: [], alarms: [], rows: 0, modified: null,
            found: false, thresholds: null, lastStep: null};
const $ = (id) => document.getElementById(id);
const el = (tag, attrs, text) => { const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]); if (text !== undefined) e.textContent = text; return e; };
const fmt = (v) => v === null || v === undefined ? "n/a" : v === 0 ? "0" :
  (Math.abs(v) >= 1e-3 && Math.abs(v) < 1e4 ? String(Number(v.toPrecision(3))) : v.toExponential(2));
// A parameter's module (fc for fc.weight); a row named by its unit (blocks.3: per-unit rows) stays whole.
const owner = (n) => { const i = n.lastIndexOf("."); return i > 0 && !/^[0-9]+$/.test(n.slice(i + 1)) ? n.slice(0, i) : n; };

function kindOf(k) {
  if (!st.kinds.has(k)) st.kinds.set(k, {layers: [], index: new Map(), steps: [], col: new Map(), sq: [], bad: [], block: new Map()});
  return st.kinds.get(k);
}
function add(row) {
  const [step, kind, name, value, bad, block] = row;
  if (kind === "nonfinite_origin") return;
  const K = kindOf(kind);
  const label = COMBINE[kind] ? owner(String(name)) : String(name);
  let li = K.index.get(label);
  if (li === undefined) { li = K.layers.length; K.layers.push(label); K.index.set(label, li); }
  if (block !== null && block !== undefined && !K.block.has(label)) K.block.set(label, block);
  let c = K.col.get(step);
  if (c === undefined) {
    c = K.steps.length;
    if (c && step < K.steps[c - 1]) { resort(K, step); c = K.col.get(step); }
    else { K.steps.push(step); K.col.set(step, c); K.sq.push(new Map()); K.bad.push(new Set()); }
  }
  const m = K.sq[c];
  st.lastStep = st.lastStep === null ? step : Math.max(st.lastStep, step);
  if (bad) K.bad[c].add(li);
  if (value === null || value === undefined) { if (!m.has(li) && !bad) m.set(li, null); return; }
  const prev = m.get(li);
  m.set(li, COMBINE[kind] ? (prev ? prev : 0) + value * value : value);
}
function resort(K, step) {  // a step older than the newest (rare): keep the columns in step order
  const entries = K.steps.map((s, i) => [s, K.sq[i], K.bad[i]]);
  entries.push([step, new Map(), new Set()]);
  entries.sort((a, b) => a[0] - b[0]);
  K.steps = entries.map(e => e[0]); K.sq = entries.map(e => e[1]); K.bad = entries.map(e => e[2]);
  K.col = new Map(K.steps.map((s, i) => [s, i]));
}
function value(K, kind, c, li) {
  const v = K.sq[c].get(li);
  if (v === undefined || v === null) return v;
  return COMBINE[kind] ? Math.sqrt(v) : v;
}
function color(t) {
  const x = Math.max(0, Math.min(1, t)) * (VIRIDIS.length - 1), i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const a = VIRIDIS[i], b = VIRIDIS[i + 1], f = x - i;
  const ch = (h, k) => parseInt(h.slice(1 + 2 * k, 3 + 2 * k), 16);
  return "rgb(" + [0, 1, 2].map(k => Math.round(ch(a, k) + f * (ch(b, k) - ch(a, k)))).join(",") + ")";
}

let layout = null;
function drawHeat() {
  const kind = $("kind").value, K = st.kinds.get(kind), cv = $("heat"), ctx = cv.getContext("2d");
  const W = cv.clientWidth || 1200;
  if (!K || !K.steps.length) { cv.dataset.steps = "0"; cv.dataset.layers = "0"; ctx.clearRect(0, 0, cv.width, cv.height); return; }
  const nL = K.layers.length, nS = K.steps.length;
  const rowH = Math.max(3, Math.min(18, Math.floor(640 / nL))), left = Math.min(260, 12 + 6.2 * Math.max(...K.layers.map(s => s.length)));
  const top = 6, H = top + rowH * nL + 30, plotW = Math.max(40, W - left - 10);
  const dpr = window.devicePixelRatio || 1;
  cv.width = Math.round(W * dpr); cv.height = Math.round(H * dpr); cv.style.height = H + "px";
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0); ctx.clearRect(0, 0, W, H);
  let lo = Infinity, hi = -Infinity;
  for (let c = 0; c < nS; c++) for (const [li] of K.sq[c]) { const v = value(K, kind, c, li);
    if (v > 0 && isFinite(v)) { const l = Math.log10(v); if (l < lo) lo = l; if (l > hi) hi = l; } }
  if (!isFinite(lo)) { lo = -1; hi = 0; }
  if (hi - lo < 1e-9) { lo -= 0.5; hi += 0.5; }
  const cols = Math.min(nS, Math.floor(plotW)), cw = plotW / cols;
  for (let x = 0; x < cols; x++) {
    const c0 = Math.floor(x * nS / cols), c1 = Math.max(c0 + 1, Math.floor((x + 1) * nS / cols));
    for (let li = 0; li < nL; li++) {
      let sum = 0, n = 0, zero = false, bad = false;
      for (let c = c0; c < c1; c++) {
        if (K.bad[c].has(li)) bad = true;
        const v = value(K, kind, c, li);
        if (v === 0) zero = true; else if (v > 0 && isFinite(v)) { sum += Math.log10(v); n++; }
      }
      ctx.fillStyle = bad ? "#e4002b" : n ? color((sum / n - lo) / (hi - lo)) : zero ? "#d0d3d8" : "#f6f7f9";
      const xa = Math.floor(left + x * cw), xb = Math.floor(left + (x + 1) * cw);
      ctx.fillRect(xa, top + li * rowH, Math.max(1, xb - xa), rowH);
    }
  }
  ctx.fillStyle = "#1d1d1f"; ctx.font = "11px system-ui, sans-serif"; ctx.textAlign = "right"; ctx.textBaseline = "middle";
  const every = Math.ceil(12 / rowH);
  for (let li = 0; li < nL; li += every) ctx.fillText(K.layers[li], left - 6, top + (li + 0.5) * rowH);
  ctx.textAlign = "center"; ctx.textBaseline = "top";
  const ticks = Math.min(8, cols);
  for (let t = 0; t <= ticks; t++) {
    const x = Math.min(cols - 1, Math.round(t * (cols - 1) / Math.max(1, ticks)));
    const c = Math.min(nS - 1, Math.floor((x + 0.5) * nS / cols));
    ctx.fillText(String(K.steps[c]), left + (x + 0.5) * cw, top + nL * rowH + 4);
  }
  ctx.fillText("step", left + plotW / 2, top + nL * rowH + 17);
  cv.dataset.steps = String(nS); cv.dataset.layers = String(nL);
  layout = {K, kind, left, top, rowH, cw, cols, nS, nL};
  drawBar(lo, hi);
}
function drawBar(lo, hi) {
  const cv = $("bar"), ctx = cv.getContext("2d"), W = cv.clientWidth || 1200, H = 44, dpr = window.devicePixelRatio || 1;
  cv.width = Math.round(W * dpr); cv.height = Math.round(H * dpr); ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, W, H);
  const x0 = layout ? layout.left : 100, w = Math.min(420, W - x0 - 10);
  for (let i = 0; i < w; i++) { ctx.fillStyle = color(i / (w - 1)); ctx.fillRect(x0 + i, 4, 1.5, 14); }
  ctx.fillStyle = "#1d1d1f"; ctx.font = "11px system-ui, sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "top";
  const step = Math.max(1, Math.ceil((hi - lo) / 6)), ticks = [];
  for (let d = Math.ceil(lo); d <= Math.floor(hi); d += step) ticks.push([d, "1e" + d]);
  if (ticks.length < 2) {  // less than a decade: label the ends and the middle with their values
    ticks.length = 0; [lo, (lo + hi) / 2, hi].forEach(d => ticks.push([d, fmt(10 ** d)]));
  }
  for (const [d, label] of ticks) ctx.fillText(label, x0 + (d - lo) / (hi - lo) * (w - 1), 21);
  ctx.textAlign = "left"; ctx.fillText("norm, log scale", x0 + w + 10, 5);
}
$("heat").addEventListener("mousemove", (ev) => {
  const tip = $("tip"); if (!layout) return;
  const r = ev.target.getBoundingClientRect(), x = ev.clientX - r.left - layout.left, y = ev.clientY - r.top - layout.top;
  const li = Math.floor(y / layout.rowH), xc = Math.floor(x / layout.cw);
  if (x < 0 || li < 0 || li >= layout.nL || xc >= layout.cols) { tip.style.display = "none"; return; }
  const c = Math.min(layout.nS - 1, Math.floor((xc + 0.5) * layout.nS / layout.cols));
  const v = value(layout.K, layout.kind, c, li), bad = layout.K.bad[c].has(li);
  tip.textContent = layout.K.layers[li] + " · step " + layout.K.steps[c] + ": " + (bad ? "NaN/Inf" : fmt(v));
  tip.style.display = "block"; tip.style.left = (ev.clientX - r.left + 12) + "px"; tip.style.top = (ev.clientY - r.top + 12) + "px";
});
$("heat").addEventListener("mouseleave", () => { $("tip").style.display = "none"; });

function latest(kind) {  // {label: value} at the newest step of a kind
  const K = st.kinds.get(kind); if (!K || !K.steps.length) return null;
  const c = K.steps.length - 1, out = [];
  for (let li = 0; li < K.layers.length; li++) { const v = value(K, kind, c, li);
    out.push({label: K.layers[li], block: K.block.has(K.layers[li]) ? K.block.get(K.layers[li]) : li, v}); }
  out.sort((a, b) => a.block - b.block);
  return {step: K.steps[c], items: out};
}
function drawUnits() {
  const svg = $("units"); svg.replaceChildren();
  const W = svg.clientWidth || 560, H = 240, L = 46, B = 34, T = 8, pw = W - L - 8, ph = H - T - B;
  const skip = SKIP_KINDS.find(k => st.kinds.has(k)), branch = BRANCH_KINDS.find(k => st.kinds.has(k));
  if (skip && branch) {
    const s = latest(skip), b = latest(branch), bl = new Map(b.items.map(i => [i.block, i.v]));
    $("unitstitle").textContent = "Skip and branch share per unit";
    $("unitsnote").textContent = "Of the gradient at each unit's input, the share through the skip (‖skip‖/(‖skip‖+‖branch‖), blue) and through the branch (‖J_Fᵀg‖, orange), step " + s.step + ".";
    const n = s.items.length, bw = Math.min(48, pw / Math.max(1, n));
    s.items.forEach((it, i) => { const bv = bl.get(it.block); const a = it.v || 0, c = bv || 0;
      const share = a + c > 0 ? a / (a + c) : 0;  // ‖skip‖/(‖skip‖ + ‖branch‖), the monitor's skip share
      svg.append(el("rect", {x: L + i * bw + 1, y: T, width: Math.max(1, bw - 2), height: ph * share, fill: "#1f5fa8"}));
      svg.append(el("rect", {x: L + i * bw + 1, y: T + ph * share, width: Math.max(1, bw - 2), height: ph * (1 - share), fill: "#e08a1e"}));
    });
    [0, 0.5, 1].forEach(f => svg.append(el("text", {x: L - 6, y: T + ph * (1 - f) + 4, "text-anchor": "end"}, (f * 100) + "%")));
    axisUnits(svg, s.items, L, T + ph, bw);
    return;
  }
  const kin = st.kinds.has("input") ? "input" : null, d = kin ? latest(kin) : null;
  if (!d) { $("unitsnote").textContent = "No per-unit rows yet (the monitor writes them for models with residual units)."; return; }
  $("unitstitle").textContent = "Gradient at each unit's input";
  $("unitsnote").textContent = "‖∂L/∂x_l‖ at the input of unit l (He et al. 2016, Eq. 5), log scale, step " + d.step + "; the skip/branch split appears here when the monitor writes it.";
  const vs = d.items.map(i => i.v).filter(v => v > 0 && isFinite(v));
  if (!vs.length) return;
  let lo = Math.floor(Math.log10(Math.min(...vs)) - 0.3), hi = Math.ceil(Math.log10(Math.max(...vs)));
  if (hi === lo) hi = lo + 1;
  const y = (v) => T + ph * (1 - (Math.log10(v) - lo) / (hi - lo)), n = d.items.length, bw = Math.min(48, pw / Math.max(1, n));
  for (let dd = lo; dd <= hi; dd++) { svg.append(el("line", {x1: L, x2: L + pw, y1: y(10 ** dd), y2: y(10 ** dd), class: "grid"}));
    svg.append(el("text", {x: L - 6, y: y(10 ** dd) + 4, "text-anchor": "end"}, "1e" + dd)); }
  d.items.forEach((it, i) => { if (!(it.v > 0)) return;
    const r = el("rect", {x: L + i * bw + 1, y: y(it.v), width: Math.max(1, bw - 2), height: T + ph - y(it.v), fill: "#1f5fa8"});
    r.append(el("title", {}, it.label + ": " + fmt(it.v))); svg.append(r); });
  axisUnits(svg, d.items, L, T + ph, bw);
}
function axisUnits(svg, items, L, y0, bw) {
  svg.append(el("line", {x1: L, x2: L + bw * items.length, y1: y0, y2: y0, class: "axis"}));
  const every = Math.ceil(items.length / 16);
  items.forEach((it, i) => { if (i % every === 0) svg.append(el("text", {x: L + (i + 0.5) * bw, y: y0 + 13, "text-anchor": "middle"}, String(it.block))); });
  svg.append(el("text", {x: L + bw * items.length / 2, y: y0 + 27, "text-anchor": "middle"}, "unit (input side first)"));
}
function drawLoss() {
  const svg = $("loss"); svg.replaceChildren();
  const W = svg.clientWidth || 560, H = 240, L = 50, B = 34, T = 8, pw = W - L - 10, ph = H - T - B;
  let ep = st.metrics.filter(m => typeof m.epoch === "number"), xname = "epoch";
  let ser = [["train_loss", "#1f5fa8"], ["test_loss", "#c0392b"]];
  if (!ep.length && st.losses.length) {  // losses logged beside the rows (an HF Trainer's log lines): per step
    const by = new Map();
    for (const [s, k, v] of st.losses) { if (!by.has(s)) by.set(s, {epoch: s}); by.get(s)[k] = v; }
    ep = [...by.values()].sort((a, b) => a.epoch - b.epoch); xname = "step";
    const keys = [...new Set(st.losses.map(l => l[1]))];
    ser = keys.map((k, i) => [k, ["#1f5fa8", "#c0392b", "#1e7b45", "#9a6700", "#6a1b9a"][i % 5]]);
  }
  if (!ep.length) { $("lossnote").textContent = "No finished epoch yet: metrics.jsonl gets one line per epoch."; return; }
  $("lossnote").textContent = xname === "epoch" ? "from metrics.jsonl, one point per epoch (" + ep.length + " so far)"
    : "logged beside the rows, per step (" + ser.map(s => s[0]).join(", ") + ")";
  const vals = ep.flatMap(m => ser.map(([k]) => m[k])).filter(v => typeof v === "number" && isFinite(v));
  let lo = Math.min(0, ...vals), hi = Math.max(...vals); if (!(hi > lo)) hi = lo + 1;
  const e0 = ep[0].epoch, e1 = Math.max(ep[ep.length - 1].epoch, e0 + 1);
  const x = (e) => L + pw * (e - e0) / (e1 - e0), y = (v) => T + ph * (1 - (v - lo) / (hi - lo));
  for (let t = 0; t <= 4; t++) { const v = lo + (hi - lo) * t / 4;
    svg.append(el("line", {x1: L, x2: L + pw, y1: y(v), y2: y(v), class: "grid"}));
    svg.append(el("text", {x: L - 6, y: y(v) + 4, "text-anchor": "end"}, fmt(v))); }
  svg.append(el("line", {x1: L, x2: L + pw, y1: T + ph, y2: T + ph, class: "axis"}));
  const nt = Math.min(6, e1 - e0);
  for (let t = 0; t <= nt; t++) { const e = Math.round(e0 + (e1 - e0) * t / nt);
    svg.append(el("text", {x: x(e), y: T + ph + 14, "text-anchor": "middle"}, String(e))); }
  svg.append(el("text", {x: L + pw / 2, y: T + ph + 28, "text-anchor": "middle"}, xname));
  $("losslegend").replaceChildren(...ser.map(([k, c]) => { const sp = document.createElement("span"), i = document.createElement("i");
    i.className = "sw"; i.style.background = c; sp.append(i, document.createTextNode(k.replace("_", " "))); return sp; }));
  for (const [k, c] of ser) {
    const pts = ep.filter(m => typeof m[k] === "number" && isFinite(m[k])).map(m => [x(m.epoch), y(m[k])]);
    if (pts.length > 1) svg.append(el("polyline", {points: pts.map(p => p.join(",")).join(" "), fill: "none", stroke: c, "stroke-width": 2}));
    pts.forEach(p => svg.append(el("circle", {cx: p[0], cy: p[1], r: 3, fill: c})));
  }
}
function drawAlarms() {
  const box = $("alarms"); box.replaceChildren();
  if (!st.alarms.length) {
    const p = document.createElement("p"); p.className = "quiet";
    const w = st.thresholds ? st.thresholds.window : 200;
    p.textContent = "No alarm: vanishing, exploding, growing, dead layers and non-finite gradients are checked at every measured step (over " + w + "-step windows).";
    box.append(p); return;
  }
  for (const a of st.alarms) {
    const p = document.createElement("p"); p.className = "alarm"; p.dataset.kind = a.kind;
    const b = document.createElement("span"); b.className = "badge"; b.textContent = a.kind;
    p.append(b, document.createTextNode(a.message || ""));
    box.append(p);
  }
}
function fillKinds() {
  const sel = $("kind"), have = [...st.kinds.keys()].filter(k => st.kinds.get(k).steps.length);
  const cur = [...sel.options].map(o => o.value);
  if (cur.join() === have.join()) return;
  const keep = sel.value;
  sel.replaceChildren(...have.map(k => { const o = document.createElement("option"); o.value = k; o.textContent = k; return o; }));
  sel.value = have.includes(keep) ? keep : have.includes("param") ? "param" : have[0] || "";
}
const NOTES = {param: "‖∂L/∂w‖ per module (its parameters combined)", activation: "‖∂L/∂y‖ of each module's output",
               input: "‖∂L/∂x_l‖ at each unit's input", weight: "‖w‖ per module", update: "‖Δw‖/‖w‖ per parameter",
               skip: "the skip part of ‖∂L/∂x‖ at each unit's input", branch: "‖J_Fᵀg‖, the branch part of ∂L/∂x per unit",
               forward: "‖F(x)‖/‖x‖ per unit", stream: "‖x‖, the residual stream entering each unit",
               act_norm: "‖y‖ at each unit's output"};
function draw() {
  fillKinds(); $("kindnote").textContent = NOTES[$("kind").value] || "";
  drawHeat(); drawUnits(); drawLoss(); drawAlarms();
  const measured = Math.max(0, ...[...st.kinds.values()].map(k => k.steps.length));
  const age = st.modified ? Math.max(0, Math.round(Date.now() / 1000 - st.modified)) : null;
  $("status").textContent = !st.found ? "waiting for " + (st.source || "the monitor file") + " (resgrad train ... --monitor N writes it)" :
    st.rows.toLocaleString() + " rows, " + measured + " measured steps, last step " +
    (st.lastStep === null ? "n/a" : st.lastStep) + (age === null ? "" : ", file updated " + age + " s ago");
}
$("kind").addEventListener("change", () => draw());
window.addEventListener("resize", () => draw());
let queued = false;
function redraw() { if (!queued) { queued = true; requestAnimationFrame(() => { queued = false; draw(); }); } }
async function poll() {
  let again = 1000;
  try {
    const r = await fetch("/data?offset=" + st.offset + "&generation=" + (st.gen === null ? "" : st.gen), {cache: "no-store"});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const d = await r.json();
    if (d.reset || st.gen !== d.generation) { st.kinds = new Map(); st.rows = 0; st.lastStep = null; }
    st.gen = d.generation; st.offset = d.offset; st.found = d.found; st.modified = d.modified; st.source = d.source;
    st.metrics = d.metrics; st.losses = d.losses || []; st.alarms = d.alarms; st.thresholds = d.thresholds;
    for (const row of d.rows) add(row);
    st.rows += d.rows.length;
    if (d.more) again = 0;
    redraw();
  } catch (e) {
    $("status").textContent = "the server does not answer (" + e.message + "); retrying";
    again = 3000;
  }
  setTimeout(poll, again);
}
poll();
</script></body></html>
"""
