// The console: lists the models (POST v2/repository/index), shows a model's metadata, edits an
// input that fits its signature (table, canvas, text, JSON), and shows Predict (infer) and
// Explain answers as charts. Every call goes to this API, relative to the page (so it works
// under a stage path), with the API key from sessionStorage when one was given.
"use strict";

const KEY_STORAGE = "model-api-key";
const API = new URL(".", window.location.href);
const $ = (id) => document.getElementById(id);

const state = {
  index: [],          // [{name, version, state, reason}]
  model: null,        // name
  version: "",        // "" = the current version (unversioned routes)
  meta: null,         // model metadata
  kind: "json",       // editor kind: table | image | text | json
  examples: null,     // {input: rows}
  charts: [],
  view: "try",        // the model's view: try | monitoring
  report: null,       // the latest drift report of the model (Monitoring)
};

// ---------------------------------------------------------------- calls
function apiKey() { return window.sessionStorage.getItem(KEY_STORAGE) || ""; }

// One prompt at a time: calls refused together (the index, the health check) share it.
let keyPrompt = null;

function askForKey() {
  if (!keyPrompt) keyPrompt = promptForKey().finally(() => { keyPrompt = null; });
  return keyPrompt;
}

function promptForKey() {
  return new Promise((resolve) => {
    const dialog = $("key-dialog");
    $("key-input").value = apiKey();
    dialog.onclose = () => {
      if (dialog.returnValue === "save" && $("key-input").value.trim()) {
        window.sessionStorage.setItem(KEY_STORAGE, $("key-input").value.trim());
        resolve(true);
      } else {
        if (dialog.returnValue === "clear") window.sessionStorage.removeItem(KEY_STORAGE);
        resolve(false);
      }
    };
    dialog.showModal();
  });
}

function headersFor(body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (apiKey()) headers["x-api-key"] = apiKey();
  return headers;
}

// {status, ok, json, text, retryAfter}; on a refused key (403), ask for one once and retry.
async function call(method, path, body, retried = false) {
  const response = await fetch(new URL(path, API), {
    method, headers: headersFor(body), body: body === undefined ? undefined : body,
  });
  const text = await response.text();
  let json = null;
  try { json = JSON.parse(text); } catch (_) { /* not JSON: shown as text */ }
  if (response.status === 403 && !retried && json && /key/i.test(json.error || "")) {
    if (await askForKey()) return call(method, path, body, true);
  }
  return { status: response.status, ok: response.ok, json, text,
           retryAfter: response.headers.get("Retry-After") };
}

// A ready route's answer as a state: 200 ready; 503 with Retry-After: a large model still
// loading from the model store (README, "Large models"); else not ready (its reason).
function readiness(answer) {
  if (answer.ok) return "ready";
  return answer.status === 503 && answer.retryAfter ? "loading" : "unavailable";
}

// While something loads, look again after the Retry-After it was given (at least 1 s).
let recheck = null;

function recheckAfter(answer) {
  if (recheck || !answer.retryAfter) return;
  const seconds = Math.min(30, Math.max(1, Number(answer.retryAfter) || 1));
  recheck = setTimeout(async () => {
    recheck = null;
    await Promise.all([loadServerState(), loadIndex(false)]);
    if (state.model) await showReadiness();
  }, seconds * 1000);
}

function errorText(answer) {
  if (answer.json && typeof answer.json.error === "string") return answer.json.error;
  return `HTTP ${answer.status}: ${answer.text.slice(0, 500)}`;
}

function curlFor(method, path, body) {
  const url = new URL(path, API).href;
  const parts = [`curl -s -X ${method} '${url}'`];
  if (body !== undefined) parts.push("-H 'Content-Type: application/json'");
  if (apiKey()) parts.push("-H \"x-api-key: $API_KEY\"");
  if (body !== undefined) parts.push(`-d '${body.replace(/'/g, "'\\''")}'`);
  return parts.join(" \\\n  ");
}

// ---------------------------------------------------------------- model list
async function loadServerState() {
  const badge = $("server-state");
  const answer = await call("GET", "v2/health/ready");
  const found = readiness(answer);
  badge.textContent = { ready: "server ready", loading: "server loading",
                        unavailable: "server not ready" }[found];
  badge.className = "badge " + found;
  badge.title = answer.ok ? "GET /v2/health/ready: 200" : errorText(answer);
  if (found === "loading") recheckAfter(answer);
}

async function loadIndex(select = true) {
  const answer = await call("POST", "v2/repository/index", "{}");
  const list = $("model-list");
  list.replaceChildren();
  if (!answer.ok || !Array.isArray(answer.json)) {
    $("index-error").hidden = false;
    $("index-error").textContent = errorText(answer);
    return;
  }
  $("index-error").hidden = true;
  state.index = answer.json;
  const byName = new Map();
  for (const entry of state.index) {
    if (!byName.has(entry.name)) byName.set(entry.name, []);
    byName.get(entry.name).push(entry);
  }
  for (const [name, versions] of byName) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "model-item";
    button.dataset.model = name;
    const ready = versions.every((v) => v.state === "READY");
    const loading = !ready && versions.some((v) => v.state === "LOADING");
    button.innerHTML = `<span class="dot ${ready ? "ready" : loading ? "loading" : "unavailable"}"></span>
      <span class="model-title"></span><span class="versions"></span>`;
    button.querySelector(".model-title").textContent = name;
    button.querySelector(".versions").textContent =
      versions.map((v) => `v${v.version}${v.state === "READY" ? "" : v.state === "LOADING" ? " (loading)" : " ✕"}`).join(" · ");
    button.title = versions.map((v) => `${v.version}: ${v.state} ${v.reason}`).join("\n");
    button.addEventListener("click", () => selectModel(name, ""));
    item.append(button);
    list.append(item);
  }
  for (const button of list.querySelectorAll(".model-item")) {
    button.classList.toggle("selected", button.dataset.model === state.model);
  }
  if (state.index.some((entry) => entry.state === "LOADING")) recheckAfter({ retryAfter: "5" });
  const wanted = decodeURIComponent(window.location.hash.slice(1));
  if (select && wanted && byName.has(wanted)) selectModel(wanted, "");
}

// ---------------------------------------------------------------- one model
function modelPath(suffix = "") {
  const base = `v2/models/${encodeURIComponent(state.model)}`;
  return (state.version ? `${base}/versions/${encodeURIComponent(state.version)}` : base) + suffix;
}

async function selectModel(name, version) {
  state.model = name;
  state.version = version;
  window.history.replaceState(null, "", `#${encodeURIComponent(name)}`);
  for (const button of document.querySelectorAll(".model-item")) {
    button.classList.toggle("selected", button.dataset.model === name);
  }
  $("welcome").hidden = true;
  $("model").hidden = false;
  $("result-card").hidden = true;
  $("model-name").textContent = name;
  const versions = state.index.filter((entry) => entry.name === name);
  const select = $("version-select");
  select.replaceChildren(new Option("current", ""),
    ...versions.map((v) => new Option(`${v.version}${v.state === "READY" ? "" : v.state === "LOADING" ? " (loading)" : " (unavailable)"}`, v.version)));
  select.value = version;
  select.onchange = () => selectModel(name, select.value);

  const answer = await call("GET", modelPath());
  const stateBadge = $("model-state");
  if (!answer.ok) {
    state.meta = null;
    stateBadge.textContent = "not ready";
    stateBadge.className = "badge unavailable";
    $("model-description").textContent = errorText(answer);
    $("signature").replaceChildren();
    $("metrics").replaceChildren();
    $("labels").replaceChildren();
    $("editor-card").hidden = true;
    return;
  }
  await showReadiness();
  state.meta = answer.json;
  renderFacts(state.meta);
  renderEditor(state.meta);
  showView(state.view);
}

// The chosen model's badge from its ready route: ready, loading (with how far, in its title
// and beside it), or not ready (the API's reason in its title).
async function showReadiness() {
  const stateBadge = $("model-state");
  const ready = await call("GET", modelPath("/ready"));
  const found = readiness(ready);
  stateBadge.textContent = { ready: "ready", loading: "loading…", unavailable: "not ready" }[found];
  stateBadge.className = "badge " + found;
  stateBadge.title = ready.ok ? "" : errorText(ready);
  if (found === "loading") recheckAfter(ready);
}

// ---------------------------------------------------------------- monitoring
// The Monitoring tab: the latest drift report (GET /v2/models/{model}/monitoring, the root API's),
// drift per feature as bars against the threshold line, and the baseline's histogram of a
// picked feature against the captured window's (model_api/monitoring/reports.py's format).
function showView(view) {
  state.view = view;
  const monitoring = view === "monitoring";
  for (const [id, on] of [["tab-try", !monitoring], ["tab-monitoring", monitoring]]) {
    $(id).classList.toggle("selected", on);
    $(id).setAttribute("aria-selected", String(on));
  }
  $("monitoring-card").hidden = !monitoring;
  if (monitoring) {
    $("editor-card").hidden = true;
    $("result-card").hidden = true;
    loadMonitoring();
  } else {
    $("editor-card").hidden = !state.meta;
  }
}

async function loadMonitoring() {
  clearCharts();
  for (const id of ["monitoring-summary", "monitoring-drift", "monitoring-histogram"]) $(id).replaceChildren();
  $("monitoring-histogram-box").hidden = true;
  const answer = await call("GET", `v2/models/${encodeURIComponent(state.model)}/monitoring`);
  state.report = answer.ok ? answer.json : null;
  $("monitoring-error").hidden = answer.ok;
  if (!answer.ok) {
    $("monitoring-error").textContent = errorText(answer);
    return;
  }
  const report = answer.json;
  const facts = document.createElement("div");
  facts.className = "monitoring-facts";
  const drifted = report.features.filter((f) => f.drifted).length;
  const badge = document.createElement("span");
  badge.id = "monitoring-status";
  badge.className = "badge " + (report.status !== "ok" ? "muted" : drifted ? "drifted" : "ready");
  badge.textContent = report.status !== "ok" ? "too few rows" : drifted ? `${drifted} drifted` : "no drift";
  const window_ = report.window || {};
  facts.append(badge, ...[
    `version ${report.model_version}`, `${window_.rows} rows captured`,
    `${window_.start} → ${window_.end}`, `baseline: ${(report.baseline || {}).rows} rows`,
  ].map((text) => Object.assign(document.createElement("span"), { textContent: text })));
  const message = Object.assign(document.createElement("p"), { id: "monitoring-message", textContent: report.message || "" });
  $("monitoring-summary").append(facts, message);
  const groups = {};
  for (const feature of report.features) (groups[feature.statistic] ||= []).push(feature);
  if (report.predictions && report.predictions.statistic) {
    (groups[report.predictions.statistic] ||= []).push({ ...report.predictions, name: `prediction (${report.predictions.output})` });
  }
  for (const [statistic, features] of Object.entries(groups)) {
    driftChart($("monitoring-drift"), statistic, features);
  }
  const names = Object.keys(report.histograms || {});
  if (!names.length) return;
  const select = $("monitoring-feature");
  select.replaceChildren(...names.map((name) => new Option(name, name)));
  const first = report.features.find((f) => f.drifted) || report.features[0];
  select.value = first ? first.name : names[0];
  select.onchange = () => histogramChart(select.value);
  $("monitoring-histogram-box").hidden = false;
  histogramChart(select.value);
}

function driftChart(parent, statistic, features) {
  const threshold = features[0].threshold;
  const box = document.createElement("div");
  box.className = "chart-box";
  box.style.height = `${Math.max(160, 22 * features.length + 70)}px`;
  const canvas = document.createElement("canvas");
  canvas.id = `chart-drift-${statistic}`;
  box.append(canvas);
  parent.append(box);
  if (typeof window.Chart !== "function") return;
  const names = features.map((f) => f.name);
  state.charts.push(new window.Chart(canvas, {
    data: {
      labels: names,
      datasets: [
        { type: "bar", label: statistic, data: features.map((f) => f.value), borderRadius: 3,
          backgroundColor: features.map((f) => (f.drifted ? "#dc2626" : "#2563eb")) },
        { type: "line", label: `threshold ${threshold}`, data: names.map(() => threshold),
          borderColor: "#111827", borderDash: [6, 4], borderWidth: 2,
          // one bar: no line to draw between points, so the threshold shows as a tick
          pointRadius: names.length === 1 ? 14 : 0, pointStyle: "line", rotation: 90 },
      ],
    },
    options: {
      indexAxis: "y", responsive: true, maintainAspectRatio: false, animation: false,
      plugins: { title: { display: true, text: `drift per feature: ${statistic} (red: at or over the threshold)` } },
      scales: { x: { beginAtZero: true, suggestedMax: threshold * 1.25, grid: { color: "#eef0f4" } },
                y: { grid: { display: false } } },
    },
  }));
}

function binNames(histogram) {
  if (histogram.categories) return histogram.categories;
  const edges = histogram.edges.map((e) => String(Number(Number(e).toPrecision(4))));
  if (!edges.length) return ["all"];
  return [`≤ ${edges[0]}`, ...edges.slice(1).map((e, i) => `${edges[i]} – ${e}`), `> ${edges[edges.length - 1]}`];
}

function histogramChart(name) {
  const histogram = state.report.histograms[name];
  const parent = $("monitoring-histogram");
  parent.replaceChildren();
  const box = document.createElement("div");
  box.className = "chart-box";
  box.style.height = "280px";
  const canvas = document.createElement("canvas");
  canvas.id = "chart-histogram";
  box.append(canvas);
  parent.append(box);
  if (typeof window.Chart !== "function") return;
  const previous = state.charts.findIndex((c) => c.canvas && c.canvas.id === "chart-histogram");
  if (previous >= 0) state.charts.splice(previous, 1)[0].destroy();
  state.charts.push(new window.Chart(canvas, {
    type: "bar",
    data: {
      labels: binNames(histogram),
      datasets: [
        { label: "baseline (training rows)", data: histogram.baseline, backgroundColor: "#9ca3af" },
        { label: "captured window", data: histogram.window, backgroundColor: "#2563eb" },
      ],
    },
    options: {
      responsive: true, maintainAspectRatio: false, animation: false,
      plugins: { title: { display: true, text: `${name}: share of rows per bin` } },
      scales: { y: { beginAtZero: true, title: { display: true, text: "share of rows" } } },
    },
  }));
}

function renderFacts(meta) {
  const parameters = meta.parameters || {};
  $("model-description").textContent = parameters.description || `${meta.platform} model`;
  const rows = [];
  for (const [kind, tensors] of [["input", meta.inputs], ["output", meta.outputs]]) {
    for (const tensor of tensors) {
      const row = document.createElement("tr");
      for (const value of [kind, tensor.name, tensor.datatype, `[${tensor.shape.join(", ")}]`]) {
        const cell = document.createElement("td");
        cell.textContent = value;
        row.append(cell);
      }
      rows.push(row);
    }
  }
  $("signature").replaceChildren(...rows);

  const metrics = $("metrics");
  metrics.replaceChildren();
  const names = { test: "held-back rows", full_dataset: "whole dataset" };
  for (const [split, values] of Object.entries(parameters.metrics || {})) {
    if (!values || typeof values !== "object") continue;
    const box = document.createElement("div");
    box.className = "metric";
    const title = document.createElement("div");
    title.className = "metric-split";
    title.textContent = names[split] || split;
    box.append(title);
    for (const [metric, value] of Object.entries(values)) {
      const line = document.createElement("div");
      line.innerHTML = `<span class="metric-name"></span> <strong></strong>`;
      line.querySelector(".metric-name").textContent = metric;
      line.querySelector("strong").textContent =
        typeof value === "number" && !Number.isInteger(value) ? value.toFixed(3) : String(value);
      box.append(line);
    }
    metrics.append(box);
  }
  if (!metrics.children.length) metrics.textContent = "none in the manifest";

  const labels = parameters.labels || [];
  $("labels").replaceChildren(...labels.map((label, i) => {
    const chip = document.createElement("span");
    chip.className = "chip";
    chip.textContent = label === String(i) ? label : `${i} · ${label}`;
    return chip;
  }));
  if (!labels.length) $("labels").textContent = parameters.task === "regression" ? "regression: no classes" : "none";
}

// ---------------------------------------------------------------- editors
function editorKind(meta) {
  if (meta.inputs.length !== 1) return "json";
  const { datatype, shape } = meta.inputs[0];
  const numeric = datatype !== "BYTES" && datatype !== "BOOL";
  if (datatype === "BYTES" && shape.length === 1) return "text";
  if (numeric && shape.length === 2 && shape[1] > 0) return "table";
  if (numeric && shape.length === 3 && shape[1] > 0 && shape[2] > 0) return "image";
  return "json";
}

function exampleRows(meta) {
  const examples = (meta.parameters || {}).examples;
  return examples && examples.inputs ? examples.inputs : null;
}

function renderEditor(meta) {
  $("editor-card").hidden = false;
  state.kind = editorKind(meta);
  state.examples = exampleRows(meta);
  const rows = state.examples ? Object.values(state.examples)[0].length : 0;
  const select = $("example-select");
  select.replaceChildren(...Array.from({ length: rows }, (_, i) => new Option(`row ${i + 1}`, String(i))));
  $("example-picker").hidden = rows === 0 || state.kind === "json";
  select.onchange = () => fillExample(Number(select.value));
  $("clear-button").hidden = state.kind !== "image";
  const editor = $("editor");
  editor.replaceChildren();
  editor.className = `editor-${state.kind}`;
  if (state.kind === "table") buildTable(meta.inputs[0]);
  if (state.kind === "image") buildCanvas(meta.inputs[0]);
  if (state.kind === "text") buildText();
  if (state.kind === "json") buildJson(meta);
  fillExample(0);
}

// A tabular input's column i: its name from the manifest (parameters.feature_names), else
// input[i].
function featureName(input, i) {
  const names = ((state.meta.parameters || {}).feature_names || {})[input.name];
  return names && names[i] !== undefined ? names[i] : `${input.name}[${i}]`;
}

function buildTable(input) {
  const grid = document.createElement("div");
  grid.className = "feature-grid";
  for (let i = 0; i < input.shape[1]; i += 1) {
    const cell = document.createElement("label");
    cell.className = "feature";
    cell.innerHTML = `<span></span><input type="text" inputmode="decimal" spellcheck="false">`;
    cell.querySelector("span").textContent = featureName(input, i);
    cell.querySelector("input").dataset.index = String(i);
    grid.append(cell);
  }
  $("editor").append(grid);
}

function buildText() {
  const area = document.createElement("textarea");
  area.id = "text-input";
  area.rows = 5;
  area.spellcheck = false;
  $("editor").append(area);
}

function buildJson(meta) {
  const area = document.createElement("textarea");
  area.id = "json-input";
  area.rows = 14;
  area.spellcheck = false;
  area.className = "code";
  $("editor").append(area);
}

// The image editor: a canvas of the input's H x W cells, drawn with the pointer; values run
// from 0 to the examples' largest value (16 for digits-cnn's 0-16 pixels), shown darker.
const image = { h: 0, w: 0, max: 1, pixels: [], canvas: null, cell: 32 };

function buildCanvas(input) {
  image.h = input.shape[1];
  image.w = input.shape[2];
  image.cell = Math.max(8, Math.floor(288 / Math.max(image.h, image.w)));
  const values = state.examples ? Object.values(state.examples)[0].flat(3) : [];
  image.max = Math.max(1, ...values.filter((v) => typeof v === "number"));
  image.pixels = new Array(image.h * image.w).fill(0);
  const wrap = document.createElement("div");
  wrap.className = "canvas-wrap";
  const canvas = document.createElement("canvas");
  canvas.id = "draw-canvas";
  canvas.width = image.w * image.cell;
  canvas.height = image.h * image.cell;
  const stack = document.createElement("div");
  stack.className = "canvas-stack";
  stack.append(canvas);
  const help = document.createElement("p");
  help.className = "hint";
  help.textContent = `Draw with the mouse or a finger: ${image.h}×${image.w} cells, values 0–${image.max}.`;
  wrap.append(stack, help);
  $("editor").append(wrap);
  image.canvas = canvas;
  let drawing = false;
  const paint = (event) => {
    const box = canvas.getBoundingClientRect();
    const x = (event.clientX - box.left) / box.width * image.w;
    const y = (event.clientY - box.top) / box.height * image.h;
    for (let r = 0; r < image.h; r += 1) {
      for (let c = 0; c < image.w; c += 1) {
        const d = Math.hypot(c + 0.5 - x, r + 0.5 - y);
        const add = d < 0.6 ? image.max : d < 1.2 ? image.max * 0.45 : 0;
        const i = r * image.w + c;
        image.pixels[i] = Math.min(image.max, image.pixels[i] + add);
      }
    }
    drawImage();
  };
  canvas.addEventListener("pointerdown", (event) => { drawing = true; canvas.setPointerCapture(event.pointerId); paint(event); });
  canvas.addEventListener("pointermove", (event) => { if (drawing) paint(event); });
  canvas.addEventListener("pointerup", () => { drawing = false; });
  $("clear-button").onclick = () => { image.pixels.fill(0); drawImage(); };
  drawImage();
}

function drawImage() {
  const ctx = image.canvas.getContext("2d");
  for (let r = 0; r < image.h; r += 1) {
    for (let c = 0; c < image.w; c += 1) {
      const shade = Math.round(255 - 255 * image.pixels[r * image.w + c] / image.max);
      ctx.fillStyle = `rgb(${shade},${shade},${shade})`;
      ctx.fillRect(c * image.cell, r * image.cell, image.cell, image.cell);
    }
  }
  ctx.strokeStyle = "rgba(120,130,150,0.25)";
  for (let i = 0; i <= Math.max(image.h, image.w); i += 1) {
    ctx.beginPath(); ctx.moveTo(i * image.cell, 0); ctx.lineTo(i * image.cell, image.h * image.cell); ctx.stroke();
    ctx.beginPath(); ctx.moveTo(0, i * image.cell); ctx.lineTo(image.w * image.cell, i * image.cell); ctx.stroke();
  }
}

function fillExample(row) {
  const meta = state.meta;
  const first = state.examples ? Object.values(state.examples)[0] : null;
  if (state.kind === "table") {
    const values = first ? first[row] : [];
    for (const cell of document.querySelectorAll(".feature input")) {
      const value = values[Number(cell.dataset.index)];
      cell.value = value === undefined ? "0" : shortNumber(value, meta.inputs[0].datatype);
    }
  } else if (state.kind === "image") {
    image.pixels = first ? first[row].flat() : new Array(image.h * image.w).fill(0);
    drawImage();
  } else if (state.kind === "text") {
    $("text-input").value = first ? String(first[row]) : "";
  } else {
    const inputs = meta.inputs.map((spec) => {
      const rows = state.examples && state.examples[spec.name] ? state.examples[spec.name].slice(0, 1) : [];
      return { name: spec.name, datatype: spec.datatype, shape: shapeOf(rows), data: rows };
    });
    $("json-input").value = JSON.stringify({ id: "console", inputs }, null, 2);
  }
}

// An example value as a person would type it: FP32 values arrive as their exact binary value
// (13.680000305175781); the fewest digits that give back the same FP32 number (13.68) are
// shown, so the request sent is the example itself. Other types keep JavaScript's own form.
function shortNumber(value, datatype) {
  if (typeof value !== "number" || datatype !== "FP32") return String(value);
  for (let digits = 1; digits < 10; digits += 1) {
    const short = Number(value.toPrecision(digits));
    if (Math.fround(short) === Math.fround(value)) return String(short);
  }
  return String(value);
}

function shapeOf(value) {
  const shape = [];
  while (Array.isArray(value)) { shape.push(value.length); value = value[0]; }
  return shape;
}

// The request body for the editor's content, as text: the table's cells go as typed (a value
// that is not a number is sent as a string, so the API says what is wrong with it).
function requestBody() {
  if (state.kind === "json") return $("json-input").value;
  const input = state.meta.inputs[0];
  let data;
  let shape;
  if (state.kind === "table") {
    data = [...document.querySelectorAll(".feature input")].map((cell) => {
      const text = cell.value.trim();
      return text !== "" && Number.isFinite(Number(text)) ? Number(text) : text;
    });
    shape = [1, data.length];
  } else if (state.kind === "image") {
    data = image.pixels.map((v) => Math.round(v * 1000) / 1000);
    shape = [1, image.h, image.w];
  } else {
    data = [$("text-input").value];
    shape = [1];
  }
  return JSON.stringify({ id: "console", inputs: [{ name: input.name, shape, datatype: input.datatype, data }] });
}

// ---------------------------------------------------------------- answers
function clearCharts() {
  for (const chart of state.charts) chart.destroy();
  state.charts = [];
}

async function run(route) {
  const body = requestBody();
  const path = modelPath(route === "explain" ? "/explain" : "/infer");
  $("busy").hidden = false;
  $("predict-button").disabled = true;
  $("explain-button").disabled = true;
  let answer;
  try {
    answer = await call("POST", path, body);
  } catch (error) {
    answer = { status: 0, ok: false, json: null, text: String(error) };
  } finally {
    $("busy").hidden = true;
    $("predict-button").disabled = false;
    $("explain-button").disabled = false;
  }
  clearCharts();
  $("result-card").hidden = false;
  $("result-card").dataset.route = route;
  $("result-title").textContent = route === "explain" ? "Explanation" : "Prediction";
  $("curl").textContent = curlFor("POST", path, body);
  $("raw-answer").textContent = answer.json ? JSON.stringify(answer.json, null, 2) : answer.text;
  const result = $("result");
  result.replaceChildren();
  if (!answer.ok) {
    $("result-error").hidden = false;
    $("result-error").textContent = errorText(answer);
    return;
  }
  $("result-error").hidden = true;
  const outputs = Object.fromEntries((answer.json.outputs || []).map((o) => [o.name, o]));
  const [answerBox, explanationBox, chartBox] = ["div", "div", "div"].map((tag) => document.createElement(tag));
  result.append(answerBox, explanationBox, chartBox);
  showPrediction(outputs, answerBox, chartBox);
  if (route === "explain") showExplanation(outputs, answer.json.parameters || {}, explanationBox);
}

function labelName(value) {
  const labels = (state.meta.parameters || {}).labels || [];
  return typeof value === "number" && labels[value] !== undefined ? labels[value] : String(value);
}

function showPrediction(outputs, result, charts) {
  const labels = (state.meta.parameters || {}).labels || [];
  const answer = document.createElement("div");
  answer.className = "answer";
  const label = outputs.label;
  const prediction = outputs.prediction;
  if (label) {
    const value = label.data.flat()[0];
    answer.innerHTML = `<div class="answer-caption">predicted class</div><div id="answer-label" class="answer-value"></div>`;
    const shown = answer.querySelector("#answer-label");
    shown.dataset.value = String(value);
    const name = typeof value === "number" ? labels[value] : undefined;
    shown.textContent = name === undefined || name === String(value) ? String(value) : `${name} (${value})`;
    result.append(answer);
  } else if (prediction) {
    const value = prediction.data.flat()[0];
    answer.innerHTML = `<div class="answer-caption">prediction</div><div id="answer-label" class="answer-value"></div>`;
    const shown = answer.querySelector("#answer-label");
    shown.dataset.value = String(value);
    shown.textContent = Number(value).toFixed(4);
    result.append(answer);
  }
  const probabilities = outputs.probabilities;
  if (probabilities) {
    const values = probabilities.data.flat().slice(0, probabilities.shape[probabilities.shape.length - 1]);
    const names = values.map((_, i) => labels[i] !== undefined ? labels[i] : String(i));
    const top = values.indexOf(Math.max(...values));
    barChart(charts, "probabilities", "class probabilities", names, values,
      values.map((_, i) => i === top ? "#4f46e5" : "#a5b4fc"), { min: 0, max: 1 });
  }
}

function showExplanation(outputs, parameters, result) {
  const heading = document.createElement("h3");
  const target = outputs.target ? outputs.target.data.flat()[0] : undefined;
  const base = outputs.base_value ? outputs.base_value.data.flat()[0] : undefined;
  heading.textContent = "Attributions" + (parameters.method ? ` · ${parameters.method}` : "") +
    (parameters.explained_output ? ` of ${parameters.explained_output}` : "") +
    (target !== undefined && (state.meta.parameters || {}).labels ? ` · for class ${labelName(target)}` : "") +
    (base !== undefined ? ` · base value ${Number(base).toFixed(3)}` : "");
  result.append(heading);
  // The explanation in words (parameters.summary: one sentence per row), above the chart.
  if (parameters.summary) {
    const summary = document.createElement("p");
    summary.id = "explanation-summary";
    summary.textContent = parameters.summary.split("\n")[0];
    result.append(summary);
  }
  const key = Object.keys(outputs).find((name) => name.startsWith("attributions"));
  if (!key) {
    const none = document.createElement("p");
    none.textContent = "The answer has no attributions output.";
    result.append(none);
    return;
  }
  const attributions = outputs[key].data.flat(4);
  if (state.kind === "image") {
    showHeatmap(attributions, result);
  } else if (state.kind === "text" && outputs.tokens) {
    showTokens(outputs.tokens.data.flat(), attributions, result);
  } else {
    const input = state.meta.inputs[0];
    const names = attributions.map((_, i) => featureName(input, i));
    const order = attributions.map((_, i) => i).sort((a, b) => Math.abs(attributions[b]) - Math.abs(attributions[a])).slice(0, 20);
    barChart(result, "attributions", "signed attribution (top 20 by size)",
      order.map((i) => names[i]), order.map((i) => attributions[i]),
      order.map((i) => attributions[i] >= 0 ? "#dc2626" : "#2563eb"));
  }
}

// The drawing in light grey with each cell's attribution over it: red pushed the answer
// towards the explained class, blue away from it; the strongest cell is the most opaque.
function showHeatmap(attributions, result) {
  const row = document.createElement("div");
  row.className = "heatmap-row";
  const canvas = document.createElement("canvas");
  canvas.id = "heatmap";
  const cell = Math.max(12, Math.floor(320 / Math.max(image.h, image.w)));
  canvas.width = image.w * cell;
  canvas.height = image.h * cell;
  const ctx = canvas.getContext("2d");
  const scale = Math.max(1e-12, ...attributions.map(Math.abs));
  for (let r = 0; r < image.h; r += 1) {
    for (let c = 0; c < image.w; c += 1) {
      const i = r * image.w + c;
      const shade = Math.round(255 - 120 * image.pixels[i] / image.max);
      ctx.fillStyle = `rgb(${shade},${shade},${shade})`;
      ctx.fillRect(c * cell, r * cell, cell, cell);
      const a = attributions[i] / scale;
      ctx.fillStyle = a >= 0 ? `rgba(220,38,38,${0.85 * a})` : `rgba(37,99,235,${-0.85 * a})`;
      ctx.fillRect(c * cell, r * cell, cell, cell);
    }
  }
  const legend = document.createElement("div");
  legend.className = "legend";
  legend.innerHTML = `<div><span class="swatch positive"></span> towards the class</div>
    <div><span class="swatch negative"></span> away from it</div>
    <p class="hint">Each cell of the drawing (light grey) shaded by its attribution; the
      strongest is the most opaque.</p>`;
  row.append(canvas, legend);
  result.append(row);
}

function showTokens(tokens, attributions, result) {
  const box = document.createElement("div");
  box.id = "token-view";
  box.className = "tokens";
  const scale = Math.max(1e-12, ...attributions.map(Math.abs));
  tokens.forEach((token, i) => {
    if (token === "") return;
    const span = document.createElement("span");
    const a = attributions[i] / scale;
    span.className = "token";
    span.textContent = token;
    span.title = `attribution ${Number(attributions[i]).toFixed(4)}`;
    span.style.background = a >= 0 ? `rgba(220,38,38,${0.7 * a})` : `rgba(37,99,235,${-0.7 * a})`;
    box.append(span, " ");
  });
  result.append(box);
}

function barChart(parent, id, title, names, values, colors, range = {}) {
  const box = document.createElement("div");
  box.className = "chart-box";
  const canvas = document.createElement("canvas");
  canvas.id = `chart-${id}`;
  box.style.height = `${Math.max(160, 26 * names.length + 60)}px`;
  box.append(canvas);
  parent.append(box);
  if (typeof window.Chart !== "function") return;
  state.charts.push(new window.Chart(canvas, {
    type: "bar",
    data: { labels: names, datasets: [{ label: title, data: values, backgroundColor: colors, borderRadius: 4 }] },
    options: {
      indexAxis: "y", responsive: true, maintainAspectRatio: false, animation: false,
      plugins: { legend: { display: false }, title: { display: true, text: title } },
      scales: { x: { ...range, grid: { color: "#eef0f4" } }, y: { grid: { display: false } } },
    },
  }));
}

// ---------------------------------------------------------------- start
window.addEventListener("DOMContentLoaded", () => {
  $("predict-button").addEventListener("click", () => run("predict"));
  $("tab-try").addEventListener("click", () => showView("try"));
  $("tab-monitoring").addEventListener("click", () => showView("monitoring"));
  $("explain-button").addEventListener("click", () => run("explain"));
  $("key-button").addEventListener("click", async () => { await askForKey(); loadIndex(); loadServerState(); });
  window.addEventListener("hashchange", () => {
    const wanted = decodeURIComponent(window.location.hash.slice(1));
    if (wanted && wanted !== state.model && state.index.some((e) => e.name === wanted)) selectModel(wanted, "");
  });
  loadIndex();
  loadServerState();
});
