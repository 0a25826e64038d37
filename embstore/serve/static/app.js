// embstore serve: each page is rendered here from its /api answer (same path, same query string).
// No library, no CDN: the DOM is built with h() from text (never HTML), so stored names cannot inject.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const page = document.body.dataset.page;
const arg = JSON.parse(document.body.dataset.arg || '""');
const app = $("#app");
const tip = $("#tip");
const params = new URLSearchParams(location.search);

function h(tag, attrs = {}, ...children) {
  const el = document.createElementNS(tag.startsWith("svg:") ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml",
                                      tag.replace("svg:", ""));
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const fmt = (v, d = 4) => (v === null || v === undefined ? "–" : typeof v === "number" && !Number.isInteger(v) ? v.toFixed(d) : String(v));
const pct = (v) => (v === null || v === undefined ? "–" : (100 * v).toFixed(1) + " %");
const withQuery = (path, extra = {}) => {
  const q = new URLSearchParams(location.search);
  for (const [k, v] of Object.entries(extra)) { if (v === null || v === "") q.delete(k); else q.set(k, v); }
  const s = q.toString();
  return path + (s ? "?" + s : "");
};
const classLink = (name, labelSet) => h("a", { href: "/class/" + encodeURIComponent(name) + (labelSet && labelSet !== "imagenet1k" ? "?labels=" + encodeURIComponent(labelSet) : "") }, name);
const imageLink = (id, text) => h("a", { href: "/image/" + id }, text || id);
const thumb = (id, caption, extra = {}) =>
  h("figure", { "data-image": id, ...extra }, h("a", { href: "/image/" + id }, h("img", { src: "/file/thumb/" + id, alt: caption || id, loading: "lazy" })),
    h("figcaption", {}, caption || id.slice(0, 8)));

async function api(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await r.json().catch(() => ({ error: { message: r.status + " " + r.statusText } }));
  if (!r.ok) throw new Error(body.error ? body.error.message : r.statusText);
  return body;
}

function table(id, columns, rows, cell) {
  return h("table", { id }, h("thead", {}, h("tr", {}, columns.map((c) => h("th", {}, c)))),
    h("tbody", {}, rows.map((r, i) => cell(r, i))));
}

function select(name, options, value, onchange) {
  return h("label", {}, name + " ",
    h("select", { name, onchange: (e) => onchange(e.target.value) },
      options.map((o) => h("option", { value: o, selected: o === value }, o))));
}

function show(...nodes) {
  app.replaceChildren(...nodes);
  app.setAttribute("aria-busy", "false");
  document.body.dataset.ready = "1";  // tests wait for this
}

function failed(err) {
  show(h("p", { class: "error", id: "error" }, err.message || String(err)));
}

function partError(part) {
  return part && part.error ? h("p", { class: "muted part-error" }, part.error) : null;
}

// -- store ----------------------------------------------------------------------------------------
async function storePage() {
  const d = await api("/api/store");
  const s = d.status;
  const counts = ["images", "labelled", "models", "vectors", "files", "runs", "errors"];
  const nodes = [h("h1", {}, "store ", h("span", { class: "muted" }, s.path))];
  if (d.running) nodes.push(h("p", { class: "banner", id: "running" }, `an ingest is running: ${s.images} images stored so far (this page refreshes)`));
  nodes.push(table("counts", ["", ""], counts, (k) => h("tr", { "data-key": k }, h("th", {}, k), h("td", { class: "num" }, Array.isArray(s[k]) ? s[k].length : s[k]))));
  nodes.push(h("h2", {}, "models"));
  nodes.push(table("models", ["model", "layers", "images", "top-1 err", "top-5 err", "weights", "preprocessing"], d.models, (m) =>
    h("tr", { "data-model": m.model_key }, h("td", {}, m.model_key), h("td", { class: "num" }, m.layers), h("td", { class: "num" }, m.images),
      h("td", { class: "num" }, pct(m.top1_error)), h("td", { class: "num" }, pct(m.top5_error)), h("td", {}, `${m.weights} ${m.weights_sha}`),
      h("td", {}, m.preprocessing))));
  for (const [model, layers] of Object.entries(d.layers)) {
    nodes.push(h("details", {}, h("summary", {}, `${model}: ${layers.length} layers`),
      table("layers-" + model, ["#", "layer", "kind", "channels", "reduction", "vectors", ""], layers, (l) =>
        h("tr", {}, h("td", { class: "num" }, l.ord), h("td", {}, l.layer), h("td", {}, l.kind), h("td", { class: "num" }, l.channels),
          h("td", {}, l.reduction), h("td", { class: "num" }, l.vectors),
          h("td", {}, h("a", { href: `/map?model=${encodeURIComponent(model)}&layer=${encodeURIComponent(l.layer)}` }, "map"))))));
  }
  for (const [set, classes] of Object.entries(d.classes)) {
    nodes.push(h("h2", {}, `classes of ${set} (${classes.length})`));
    nodes.push(h("p", { class: "classes", "data-set": set }, classes.map((c, i) => [i ? " · " : "", classLink(c.name, set), h("span", { class: "muted" }, ` ${c.images}`)])));
  }
  nodes.push(h("h2", {}, "runs"));
  nodes.push(table("runs", ["run", "model", "status", "started", "s", "images", "done", "skipped", "errors"], d.runs, (r) =>
    h("tr", {}, h("td", {}, r.run_id), h("td", {}, r.model_key), h("td", {}, r.status), h("td", {}, r.started), h("td", { class: "num" }, fmt(r.seconds, 1)),
      h("td", { class: "num" }, r.n_images), h("td", { class: "num" }, r.n_done), h("td", { class: "num" }, r.n_skipped), h("td", { class: "num" }, r.n_errors))));
  nodes.push(h("h2", {}, "errors"));
  nodes.push(d.errors.by_reason.length ? table("errors", ["reason", "images"], d.errors.by_reason, (e) => h("tr", {}, h("td", {}, e.reason), h("td", { class: "num" }, e.images)))
    : h("p", { class: "muted" }, "none"));
  show(...nodes);
  if (d.running) setTimeout(() => storePage().catch(failed), 2000);
}

// -- class ----------------------------------------------------------------------------------------
async function classPage() {
  const d = await api(withQuery("/api/class/" + encodeURIComponent(arg)));
  const c = d.class;
  const go = (k) => (v) => { location.href = withQuery(location.pathname, { [k]: v }); };
  const sim = d.similar;
  const nodes = [h("h1", {}, c.name, " ", h("span", { class: "muted" }, `${c.id || ""} · ${c.label_set} · ${c.images} images`))];
  if (d.model) {
    nodes.push(h("div", { class: "controls" },
      select("model", d.models, d.model, go("model")),
      select("layer", ["", "all", ...d.layers], params.get("layer") || "", go("layer")),
      select("method", ["", "prototype", "tstat", "hidden", "classifier"], params.get("method") || "", go("method"))));
  }
  nodes.push(h("div", { class: "cols" },
    h("section", {}, h("h2", {}, "nearest classes"), partError(sim),
      sim && !sim.error ? [h("p", { class: "muted", id: "similar-what" }, `${sim.model} · layer ${sim.layer} · ${sim.method}`),
        table("similar", ["#", "class", "score", "images"], sim.results, (r) =>
          h("tr", { "data-name": r.name, "data-score": r.score }, h("td", { class: "num" }, r.rank), h("td", {}, classLink(r.name, r.label_set || c.label_set)),
            h("td", { class: "num" }, fmt(r.score)), h("td", { class: "num" }, r.images))),
        sim.notes.map((n) => h("p", { class: "muted note" }, n))] : null),
    d.channels ? h("section", {}, h("h2", {}, `prototype's top channels (${d.channels.layer || ""})`), partError(d.channels),
      d.channels.top ? table("channels", ["channel", "mean"], d.channels.top, (t) => h("tr", {}, h("td", { class: "num" }, t.channel), h("td", { class: "num" }, fmt(t.mean)))) : null) : null));
  nodes.push(h("h2", {}, `images (${d.images.length} of ${c.images})`));
  nodes.push(h("div", { class: "grid", id: "images" }, d.images.map((i) => thumb(i.image_id, i.path.split("/").pop()))));
  nodes.push(h("h2", {}, `failures of ${d.model || "–"} (worst first)`));
  nodes.push(d.failures.length ? table("failures", ["image", "rank of truth", "p(truth)", "top-5"], d.failures, (f) =>
    h("tr", { "data-image": f.image_id }, h("td", {}, thumb(f.image_id, f.path.split("/").pop())), h("td", { class: "num" }, f.true_rank ?? "–"),
      h("td", { class: "num" }, fmt(f.true_prob)), h("td", {}, h("ol", {}, f.top5.map((t) => h("li", {}, `${t.name} `, h("span", { class: "muted" }, fmt(t.prob, 3))))))))
    : h("p", { class: "muted" }, "none"));
  show(...nodes);
}

// -- image ----------------------------------------------------------------------------------------
async function imagePage() {
  const d = await api(withQuery("/api/image/" + arg));
  const im = d.image;
  const go = (k) => (v) => { location.href = withQuery(location.pathname, { [k]: v }); };
  const near = d.nearest;
  const nodes = [h("h1", {}, im.path.split("/").pop(), " ", h("span", { class: "muted" }, im.image_id))];
  nodes.push(h("div", { class: "cols" },
    h("img", { class: "big", src: "/file/image/" + im.image_id, alt: im.path }),
    h("section", {},
      table("card", ["", ""], [["path", im.path], ["size", `${im.width} × ${im.height}`], ["label", im.label_name], ["label set", im.label_set]],
        ([k, v]) => h("tr", {}, h("th", {}, k), h("td", {}, k === "label" && v ? classLink(v, im.label_set) : v ?? "–"))),
      d.predictions.map((p) => [h("h2", {}, `top-5 of ${p.model_key}`),
        h("ol", { class: "top5", "data-model": p.model_key }, p.top5.map((t) => h("li", { "data-name": t.name }, classLink(t.name), " ", h("span", { class: "muted" }, fmt(t.prob, 3)))))]))));
  if (d.model) {
    nodes.push(h("div", { class: "controls" }, select("model", d.models, d.model, go("model")), select("layer", d.layers, d.layer, go("layer"))));
  }
  nodes.push(h("h2", {}, "nearest images"), partError(near));
  if (near && !near.error) {
    nodes.push(h("p", { class: "muted" }, `${near.model} · layer ${near.layer} · ${near.method}`));
    nodes.push(h("div", { class: "grid", id: "nearest" }, near.results.map((r) =>
      thumb(r.name, `${r.rank}. ${fmt(r.score, 3)} ${r.label || ""}`, { "data-score": r.score }))));
  }
  show(...nodes);
}

// -- analyses -------------------------------------------------------------------------------------
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#be185d", "#4d7c0f", "#7c2d12", "#334155"];

const chartIds = {};
function lineChart(name, series, { yLabel, xLabel, yMin = 0.4, square = false, dots = false }) {
  chartIds[name] = (chartIds[name] || 0) + 1;
  const id = chartIds[name] === 1 ? name : `${name}-${chartIds[name]}`;
  // series: [{name, points: [{x, y, lo, hi, label}]}]; hover shows values; the legend toggles a series
  const W = 760, H = 300, L = 48, R = 12, T = 12, B = 36;
  const all = series.flatMap((s) => s.points);
  if (!all.length) return h("p", { class: "muted" }, "nothing stored");
  const xs = all.map((p) => p.x), ys = all.flatMap((p) => [p.y, p.lo ?? p.y, p.hi ?? p.y]).filter((v) => v !== null);
  const x0 = square ? 0 : Math.min(...xs), x1 = square ? 1 : Math.max(...xs) || 1;
  const y0 = Math.min(yMin, ...ys), y1 = Math.max(1, ...ys);
  const sx = (x) => L + ((x - x0) / (x1 - x0 || 1)) * (W - L - R), sy = (y) => T + (1 - (y - y0) / (y1 - y0 || 1)) * (H - T - B);
  const svg = h("svg:svg", { id, class: "chart", width: W, height: H, viewBox: `0 0 ${W} ${H}` });
  svg.append(h("svg:line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }), h("svg:line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  for (const t of [0, 0.25, 0.5, 0.75, 1]) if (t >= y0 && t <= y1) svg.append(h("svg:text", { x: 4, y: sy(t) + 4, "font-size": 11 }, t.toFixed(2)));
  svg.append(h("svg:text", { x: L, y: H - 8, "font-size": 11 }, xLabel || "layer (forward order)"), h("svg:text", { x: L + 8, y: T + 10, "font-size": 11 }, yLabel));
  const legend = h("p", { class: "legend" });
  series.forEach((s, i) => {
    const color = COLORS[i % COLORS.length];
    const g = h("svg:g", { "data-series": s.name });
    const band = s.points.filter((p) => p.lo !== null && p.hi !== null && p.lo !== undefined);
    if (band.length > 1) {
      g.append(h("svg:path", { class: "band", fill: color, d: "M" + band.map((p) => `${sx(p.x)},${sy(p.hi)}`).join("L") + "L" + band.slice().reverse().map((p) => `${sx(p.x)},${sy(p.lo)}`).join("L") + "Z" }));
    }
    if (!dots) g.append(h("svg:path", { fill: "none", stroke: color, "stroke-width": 2, d: "M" + s.points.map((p) => `${sx(p.x)},${sy(p.y)}`).join("L") }));
    const every = dots ? 1 : Math.ceil(s.points.length / 200);  // hover targets: at most 200 per curve
    for (const p of s.points.filter((_, j) => j % every === 0 || j === s.points.length - 1)) {
      const dot = h("svg:circle", { cx: sx(p.x), cy: sy(p.y), r: 4, fill: color, "data-layer": p.label, "data-value": p.y });
      dot.addEventListener("mouseenter", (e) => tipShow(e, [`${s.name}`, `${p.label}: ${fmt(p.y, 3)}` + (p.lo !== null && p.lo !== undefined ? ` [${fmt(p.lo, 3)}, ${fmt(p.hi, 3)}]` : "")]));
      dot.addEventListener("mouseleave", tipHide);
      g.append(dot);
    }
    svg.append(g);
    legend.append(h("label", {}, h("input", { type: "checkbox", checked: true, "data-toggle": s.name, onchange: (e) => { g.style.display = e.target.checked ? "" : "none"; } }),
      h("span", { class: "swatch", style: `background:${color}` }), s.name));
  });
  return h("div", {}, legend, svg);
}

function tipShow(e, lines, image) {
  tip.replaceChildren(...lines.map((l) => h("div", {}, l)), image ? h("img", { src: "/file/thumb/" + image, alt: "" }) : "");
  tip.hidden = false;
  tip.style.left = e.clientX + 14 + "px";
  tip.style.top = e.clientY + 14 + "px";
}
function tipHide() { tip.hidden = true; }

async function analysesPage() {
  const d = await api("/api/analyses");
  const nodes = [h("h1", {}, "analyses")];
  nodes.push(h("h2", {}, "triplet matching (seed 000)"));
  if (!d.matching.length) nodes.push(h("p", { class: "muted" }, "none stored: embstore analyze matching MANIFEST"));
  for (const m of d.matching) {
    nodes.push(h("p", { class: "muted" }, `manifest ${m.manifest_sha.slice(0, 12)} · ${m.triplets} triplets`));
    nodes.push(table("matching-" + m.manifest_sha.slice(0, 12), ["model", "layer", "error", "95 % CI", "AUC", "95 % CI"], m.summary, (r) =>
      h("tr", { "data-model": r.model_key, "data-layer": r.layer, "data-error": r.error }, h("td", {}, r.model_key), h("td", {}, r.layer), h("td", { class: "num" }, fmt(r.error, 3)),
        h("td", { class: "num" }, `${fmt(r.error_ci_low, 3)} – ${fmt(r.error_ci_high, 3)}`), h("td", { class: "num" }, fmt(r.auc, 3)),
        h("td", { class: "num" }, `${fmt(r.auc_ci_low, 3)} – ${fmt(r.auc_ci_high, 3)}`))));
    const byModel = {};
    for (const r of m.summary) (byModel[r.model_key] ||= []).push(r);
    nodes.push(lineChart("matching-chart", Object.entries(byModel).map(([name, rows]) => ({ name, points: rows.map((r, i) => ({ x: i, y: r.error, lo: r.error_ci_low, hi: r.error_ci_high, label: r.layer })) })),
      { yLabel: "matching error (95 % CI)" }));
    nodes.push(lineChart("roc-chart", Object.entries(m.cases).map(([name, cs]) => ({ name: `${name} · ${cs.layer} · AUC ${fmt(cs.auc, 3)}`,
      points: cs.roc.fpr.map((x, i) => ({ x, y: cs.roc.tpr[i], label: `FPR ${fmt(x, 3)} → TPR` })) })),
      { yLabel: "ROC: related pairs above a cosine threshold", xLabel: "false positive rate", yMin: 0, square: true }));
    const withTop1 = Object.entries(m.cases).filter(([, cs]) => cs.top1_error !== null);
    if (withTop1.length) {
      nodes.push(lineChart("errors-chart", withTop1.map(([name, cs]) => ({ name, points: [{ x: cs.top1_error, y: cs.error, label: `top-1 ${fmt(cs.top1_error, 3)} · matching` }] })),
        { yLabel: "matching error against ImageNet top-1 error (seed 000 fig. 6)", xLabel: "top-1 error of the labelled images", yMin: 0, square: true, dots: true }));
    }
    const rated = Object.entries(m.cases).filter(([, cs]) => cs.ratings);
    if (rated.length) {
      nodes.push(lineChart("ratings-chart", rated.flatMap(([name, cs]) => ["related", "unrelated"].map((kind) => ({ name: `${name} · ${kind}`,
        points: cs.ratings[kind].filter(([r]) => r !== null).map(([r, c]) => ({ x: r, y: c, label: `rating ${fmt(r, 2)} · cosine` })) }))),
        { yLabel: "cosine against human rating (seed 000 fig. 4)", xLabel: "human rating of the pair", yMin: 0, dots: true }));
    }
    for (const [model, cs] of Object.entries(m.cases)) {
      nodes.push(h("h2", {}, `cases of ${model} at ${cs.layer}`));
      for (const kind of ["best", "worst", "good_luck", "bad_luck"]) {
        nodes.push(h("div", { class: "cases", "data-kind": kind }, h("p", { class: "muted" }, kind.replace("_", " ")),
          cs[kind].map((t) => h("div", { class: "grid" }, t.ids.map((id, j) => thumb(id, ["object", `related ${fmt(t.cos_related, 3)}`, `unrelated ${fmt(t.cos_unrelated, 3)}`][j]))))));
      }
    }
  }
  nodes.push(h("h2", {}, "similarity encoding per layer (seed 004)"));
  const groups = {};
  for (const r of d.rsa) (groups[`${r.reference} · ${r.label_set}`] ||= {})[r.model_key] ||= [];
  for (const r of d.rsa) groups[`${r.reference} · ${r.label_set}`][r.model_key].push(r);
  if (!d.rsa.length) nodes.push(h("p", { class: "muted" }, "none stored: embstore analyze rsa"));
  const MEASURES = { acc_2v2: ["2 vs 2 accuracy", "acc_ci_low", "acc_ci_high"], rsa_spearman: ["RSA Spearman ρ", "rsa_spearman_ci_low", "rsa_spearman_ci_high"],
                     acc_1v2: ["1 vs 2 accuracy (misclassified images)", null, null] };
  const measure = MEASURES[params.get("measure")] ? params.get("measure") : "acc_2v2";
  const [title, lo, hi] = MEASURES[measure];
  if (d.rsa.length) nodes.push(h("div", { class: "controls" }, select("measure", Object.keys(MEASURES), measure, (v) => { location.href = withQuery(location.pathname, { measure: v }); })));
  for (const [key, models] of Object.entries(groups)) {
    nodes.push(h("p", { class: "muted" }, key));
    nodes.push(lineChart("rsa-chart", Object.entries(models).map(([name, rows]) => ({ name, points: rows.filter((r) => r[measure] !== null).map((r) =>
      ({ x: r.layer_order, y: r[measure], lo: lo ? r[lo] : null, hi: hi ? r[hi] : null, label: r.layer })) })),
      { yLabel: `${title} (95 % CI)`, yMin: measure === "rsa_spearman" ? -0.2 : 0.4 }));
    nodes.push(table("rsa", ["model", "layer", "2 vs 2", "95 % CI", "p", "RSA ρ", "1 vs 2"], Object.values(models).flat(), (r) =>
      h("tr", { "data-model": r.model_key, "data-layer": r.layer, "data-acc": r.acc_2v2 }, h("td", {}, r.model_key), h("td", {}, r.layer), h("td", { class: "num" }, fmt(r.acc_2v2, 3)),
        h("td", { class: "num" }, `${fmt(r.acc_ci_low, 3)} – ${fmt(r.acc_ci_high, 3)}`), h("td", { class: "num" }, fmt(r.p_value, 4)),
        h("td", { class: "num" }, fmt(r.rsa_spearman, 3)), h("td", { class: "num" }, fmt(r.acc_1v2, 3)))));
  }
  show(...nodes);
}

// -- map ------------------------------------------------------------------------------------------
async function mapPage() {
  const d = await api(withQuery("/api/map"));
  const go = (k) => (v) => { location.href = withQuery(location.pathname, { [k]: v }); };
  const W = 900, H = 640, P = 16;
  const canvas = h("canvas", { id: "map", width: W, height: H });
  const info = h("p", { class: "muted", id: "map-info" }, `${d.n} ${d.of} · ${d.model} · layer ${d.layer} · ${d.method}` +
    (d.explained.length ? ` · PC1 ${pct(d.explained[0])}, PC2 ${pct(d.explained[1])}` : "") + " · drag a box to select");
  const picked = h("div", { id: "selection" });
  const n = d.x.length;
  const minX = Math.min(...d.x), maxX = Math.max(...d.x), minY = Math.min(...d.y), maxY = Math.max(...d.y);
  const px = new Float32Array(n), py = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    px[i] = P + ((d.x[i] - minX) / (maxX - minX || 1)) * (W - 2 * P);
    py[i] = H - P - ((d.y[i] - minY) / (maxY - minY || 1)) * (H - 2 * P);
  }
  const ctx = canvas.getContext("2d");
  const colorOf = (l) => COLORS[((l % COLORS.length) + COLORS.length) % COLORS.length];
  const draw = (box) => {
    ctx.clearRect(0, 0, W, H);
    const r = n > 20000 ? 1.2 : n > 2000 ? 2 : 4;
    for (let i = 0; i < n; i++) { ctx.fillStyle = colorOf(d.labels[i]); ctx.fillRect(px[i] - r, py[i] - r, 2 * r, 2 * r); }
    if (d.of === "classes" && n <= 300) {  // few enough to name
      ctx.fillStyle = "#374151"; ctx.font = "12px DejaVu Sans, sans-serif";
      for (let i = 0; i < n; i++) ctx.fillText(d.ids[i], Math.min(px[i] + 6, W - 90), py[i] + 4);
    }
    if (box) { ctx.strokeStyle = "#111827"; ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]); }
  };
  // a grid of cells for hover lookups: 100 k points stay smooth
  const CELL = 8, cols = Math.ceil(W / CELL), cells = new Map();
  for (let i = 0; i < n; i++) { const k = Math.floor(py[i] / CELL) * cols + Math.floor(px[i] / CELL); (cells.get(k) || cells.set(k, []).get(k)).push(i); }
  const nearest = (x, y) => {
    let best = -1, bd = 64;
    for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
      for (const i of cells.get((Math.floor(y / CELL) + dy) * cols + Math.floor(x / CELL) + dx) || []) {
        const dd = (px[i] - x) ** 2 + (py[i] - y) ** 2; if (dd < bd) { bd = dd; best = i; }
      }
    }
    return best;
  };
  const nameOf = (i) => (d.of === "classes" ? d.ids[i] : d.names[d.labels[i]] || "unlabelled");
  const target = (i) => (d.of === "classes" ? "/class/" + encodeURIComponent(d.ids[i]) + (d.label_set !== "imagenet1k" ? "?labels=" + encodeURIComponent(d.label_set) : "") : "/image/" + d.ids[i]);
  let dragging = null, moved = false;
  const pos = (e) => { const b = canvas.getBoundingClientRect(); return [e.clientX - b.left, e.clientY - b.top]; };
  canvas.addEventListener("mousemove", (e) => {
    const [x, y] = pos(e);
    if (dragging) { moved = true; draw([dragging[0], dragging[1], x, y]); return; }
    const i = nearest(x, y);
    canvas.dataset.hover = i >= 0 ? d.ids[i] : "";
    if (i < 0) { tipHide(); return; }
    tipShow(e, [nameOf(i), d.of === "images" ? d.ids[i].slice(0, 12) : ""], d.of === "images" ? d.ids[i] : null);
  });
  canvas.addEventListener("mouseleave", tipHide);
  canvas.addEventListener("mousedown", (e) => { dragging = pos(e); moved = false; });
  canvas.addEventListener("mouseup", (e) => {
    const [x, y] = pos(e), start = dragging; dragging = null;
    if (!moved) { const i = nearest(x, y); if (i >= 0) location.href = target(i); return; }
    const [ax, bx, ay, by] = [Math.min(start[0], x), Math.max(start[0], x), Math.min(start[1], y), Math.max(start[1], y)];
    const sel = [];
    for (let i = 0; i < n; i++) if (px[i] >= ax && px[i] <= bx && py[i] >= ay && py[i] <= by) sel.push(i);
    draw([start[0], start[1], x, y]);
    picked.replaceChildren(h("h2", {}, `selection: ${sel.length}`), table("selection-table", [d.of === "classes" ? "class" : "image", "label", "x", "y"], sel.slice(0, 500), (i) =>
      h("tr", { "data-id": d.ids[i] }, h("td", {}, h("a", { href: target(i) }, d.of === "classes" ? d.ids[i] : d.ids[i].slice(0, 12))), h("td", {}, nameOf(i)),
        h("td", { class: "num" }, fmt(d.x[i], 3)), h("td", { class: "num" }, fmt(d.y[i], 3)))));
  });
  show(h("h1", {}, "map"),
    h("div", { class: "controls" },
      select("of", ["classes", "images"], d.of, go("of")),
      h("label", {}, "layer ", h("input", { name: "layer", value: d.layer, size: 18, onchange: (e) => go("layer")(e.target.value) })),
      select("method", ["pca", "umap"], d.method, go("method"))),
    info, canvas, picked);
  draw();
}

// -- SQL ------------------------------------------------------------------------------------------
async function sqlPage() {
  const ex = await api("/api/examples");
  const box = h("textarea", { id: "query", spellcheck: "false" }, params.get("q") || ex.examples[0].sql);
  const out = h("div", { id: "result" });
  const run = async (push = true) => {
    const q = box.value;
    if (push) history.replaceState(null, "", "/sql?q=" + encodeURIComponent(q));
    out.replaceChildren(h("p", { class: "muted" }, "running…"));
    try {
      const d = await api("/api/sql?q=" + encodeURIComponent(q));
      out.replaceChildren(h("p", { class: "muted" }, `${d.truncated ?? d.rows.length} rows` + (d.truncated ? `, first ${d.rows.length} shown` : "")),
        table("rows", d.columns, d.rows, (r) => h("tr", {}, d.columns.map((c) => h("td", { class: typeof r[c] === "number" ? "num" : "" },
          r[c] !== null && typeof r[c] === "object" ? JSON.stringify(r[c]) : fmt(r[c], 6))))));
    } catch (err) {
      out.replaceChildren(h("p", { class: "error", id: "sql-error" }, err.message));
    }
    document.body.dataset.ran = String(Number(document.body.dataset.ran || 0) + 1);
  };
  show(h("h1", {}, "SQL"), h("p", { class: "muted" }, "read-only, confined to this store's files, like embstore sql"), box,
    h("p", {}, h("button", { id: "run", onclick: () => run() }, "run")),
    h("ol", { class: "examples" }, ex.examples.map((e, i) => h("li", {}, h("a", { "data-example": i, onclick: () => { box.value = e.sql; run(); } }, e.title)))),
    out);
  if (params.get("q")) run(false);
}

// -- start ----------------------------------------------------------------------------------------
for (const a of document.querySelectorAll("header nav a")) if (a.dataset.nav === page) a.classList.add("on");
$("#find").addEventListener("submit", (e) => { e.preventDefault(); const v = e.target.elements["class"].value.trim(); if (v) location.href = "/class/" + encodeURIComponent(v); });
const PAGES = { store: storePage, class: classPage, image: imagePage, analyses: analysesPage, map: mapPage, sql: sqlPage };
(PAGES[page] || storePage)().catch(failed);
