// Weir's web console: plain modules, no build step, no requests beyond this server.
// It talks to the ksqlDB API (/ksql, /query-stream, /close-query, /info, /healthcheck)
// like any client, plus /console/api/queries (operators and their row counts) and
// /console/api/processing-log.

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
};

const KEYWORDS = `SELECT FROM WHERE GROUP BY HAVING EMIT CHANGES FINAL CREATE STREAM TABLE AS WITH
INSERT INTO VALUES DROP DELETE TOPIC TERMINATE SHOW LIST DESCRIBE EXTENDED EXPLAIN PRINT
STREAMS TABLES QUERIES FUNCTIONS TOPICS PROPERTIES TYPES JOIN LEFT RIGHT FULL OUTER INNER ON
WITHIN WINDOW TUMBLING HOPPING SESSION SIZE ADVANCE GRACE PERIOD RETENTION PARTITION LIMIT
AND OR NOT NULL IS IN LIKE BETWEEN CASE WHEN THEN ELSE END CAST TRUE FALSE KEY PRIMARY
HEADERS HEADER SOURCE IF EXISTS SET UNSET PAUSE RESUME ALL DISTINCT STRUCT ARRAY MAP
INTEGER INT BIGINT DOUBLE DECIMAL VARCHAR STRING BOOLEAN BYTES DATE TIME TIMESTAMP
SECONDS MINUTES HOURS DAYS MILLISECONDS KAFKA_TOPIC VALUE_FORMAT KEY_FORMAT PARTITIONS
TIMESTAMP_FORMAT ASSERT SCHEMA`.split(/\s+/).filter(Boolean);
const KEYWORD_SET = new Set(KEYWORDS);

const catalog = { streams: [], tables: [], queries: [], functions: [] };
const http = async (path, init = {}) => {
  const r = await fetch(path, { ...init, headers: { Accept: "application/json", ...(init.headers || {}) } });
  const text = await r.text();
  let body;
  try { body = JSON.parse(text); } catch { body = { message: text }; }
  if (!r.ok) throw Object.assign(new Error(body.message || r.statusText), { body, status: r.status });
  return body;
};
const ksql = (sql, props = {}) => http("/ksql", {
  method: "POST",
  headers: { "Content-Type": "application/vnd.ksql.v1+json", Accept: "application/vnd.ksql.v1+json" },
  body: JSON.stringify({ ksql: sql, streamsProperties: props }),
});

// ---------- catalog ----------

function fillList(ul, items, render) {
  const open = ul.dataset.selected;
  ul.replaceChildren(...items.map((it) => {
    const li = render(it);
    if (li.dataset.key === open) li.classList.add("selected");
    return li;
  }));
}

async function refreshCatalog(withFunctions) {
  const sql = "SHOW STREAMS; SHOW TABLES;" + (withFunctions ? " SHOW FUNCTIONS;" : "");
  let entities;
  try { entities = await ksql(sql); } catch { return; }
  for (const e of entities) {
    if (e["@type"] === "streams") catalog.streams = e.streams || [];
    if (e["@type"] === "tables") catalog.tables = e.tables || [];
    if (e["@type"] === "function_names") catalog.functions = e.functions || [];
  }
  const source = (s) => el("li", { "data-key": s.name, title: `DESCRIBE ${s.name} EXTENDED`, onclick: () => describe(s.name) },
    s.name, el("span", { class: "sub" }, `${s.topic} · ${s.keyFormat || "KAFKA"}/${s.valueFormat || s.format}`));
  fillList($("#streams"), catalog.streams, source);
  fillList($("#tables"), catalog.tables, source);
  $("#n-streams").textContent = catalog.streams.length;
  $("#n-tables").textContent = catalog.tables.length;
  if (withFunctions) renderFunctions();
}

function renderFunctions() {
  const filter = $("#function-filter").value.trim().toUpperCase();
  const fns = catalog.functions.filter((f) => !filter || f.name.toUpperCase().includes(filter));
  fillList($("#functions"), fns.slice(0, 400), (f) => el("li", {
    "data-key": f.name, title: `DESCRIBE FUNCTION ${f.name}`, onclick: () => describe(f.name, true),
  }, f.name));
  $("#n-functions").textContent = catalog.functions.length;
}

async function describe(name, fn = false, query = false) {
  const sql = fn ? `DESCRIBE FUNCTION ${name};` : query ? `EXPLAIN ${name};` : `DESCRIBE ${name} EXTENDED;`;
  showTab("details");
  $("#details").textContent = `${sql}\n…`;
  try {
    const [e] = await ksql(sql);
    $("#details").textContent = `${sql}\n\n${describeText(e)}`;
  } catch (err) {
    $("#details").textContent = `${sql}\n\n${err.message}`;
  }
}

function describeText(e) {
  const d = e.sourceDescription || e.queryDescription;
  if (e.sourceDescription) {
    const lines = [`${d.type} ${d.name}`, `topic: ${d.topic} (${d.partitions ?? "?"} partitions)`,
      `key format: ${d.keyFormat}, value format: ${d.valueFormat}`, "", "columns:"];
    for (const f of d.fields || []) lines.push(`  ${f.name.padEnd(24)} ${fieldType(f.schema)}${f.type === "KEY" ? "  (key)" : ""}`);
    if (d.statement) lines.push("", d.statement);
    if (d.readQueries?.length) lines.push("", "read by: " + d.readQueries.map((q) => q.id).join(", "));
    if (d.writeQueries?.length) lines.push("written by: " + d.writeQueries.map((q) => q.id).join(", "));
    if (d.statistics) lines.push("", d.statistics);
    if (d.errorStats) lines.push(d.errorStats);
    return lines.join("\n");
  }
  if (e.queryDescription) {
    return [`${d.id} ${d.state || ""}`, d.statementText, "", "sources: " + (d.sources || []).join(", "),
      "sinks: " + (d.sinks || []).join(", "), "", d.executionPlan || ""].join("\n");
  }
  if (e.name && e.functions) {
    return [`${e.name} (${e.type}) — ${e.description || ""}`, "",
      ...e.functions.map((v) => `${e.name}(${(v.arguments || []).map((a) => `${a.name || ""} ${a.type}`.trim()).join(", ")}) -> ${v.returnType}`)].join("\n");
  }
  return JSON.stringify(e, null, 2);
}

const fieldType = (s) => !s ? "" : s.type === "ARRAY" ? `ARRAY<${fieldType(s.memberSchema)}>`
  : s.type === "MAP" ? `MAP<STRING, ${fieldType(s.memberSchema)}>`
  : s.type === "STRUCT" ? `STRUCT<${(s.fields || []).map((f) => `${f.name} ${fieldType(f.schema)}`).join(", ")}>`
  : s.type;

// ---------- queries, pipelines, metrics ----------

const history = new Map(); // query id -> [{t, consumed, lag}]
const HISTORY_SECONDS = 300;
let lastQueries = [];

async function refreshQueries() {
  let list;
  try { list = await http("/console/api/queries"); } catch { return; }
  const now = Date.now() / 1000;
  for (const q of list) {
    const h = history.get(q.id) || [];
    h.push({ t: now, consumed: q.consumed, produced: q.produced, lag: q.lag });
    while (h.length && h[0].t < now - HISTORY_SECONDS) h.shift();
    history.set(q.id, h);
  }
  for (const id of [...history.keys()]) if (!list.some((q) => q.id === id)) history.delete(id);
  lastQueries = list;
  catalog.queries = list;
  fillList($("#queries"), list, (q) => {
    const h = history.get(q.id);
    const rate = (key) => {
      if (!h || h.length < 2) return 0;
      const a = h[Math.max(0, h.length - 6)], b = h[h.length - 1];
      return b.t > a.t ? (b[key] - a[key]) / (b.t - a.t) : 0;
    };
    return el("li", { "data-key": q.id, title: q.error || q.statement, onclick: () => describe(q.id, false, true) },
      q.id, " ", el("span", { class: `state-${q.state}` }, q.state),
      el("span", { class: "sub" }, `in ${fmt(rate("consumed"))}/s · out ${fmt(rate("produced"))}/s · lag ${fmt(q.lag)} · log ${fmt(q.errors)}`));
  });
  $("#n-queries").textContent = list.length;
  if (!$("#tab-pipelines").hidden) drawPipelines();
  if (!$("#tab-charts").hidden) drawMetricCharts();
}

const fmt = (n) => n >= 1e6 ? (n / 1e6).toFixed(1) + "M" : n >= 1e4 ? (n / 1e3).toFixed(1) + "k" : Number.isInteger(n) ? String(n) : n.toFixed(1);

function drawPipelines() {
  const box = $("#pipelines");
  if (!lastQueries.length) { box.textContent = "No persistent queries."; return; }
  box.replaceChildren(...lastQueries.map(pipelineView));
}

function pipelineView(q) {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  const nodes = [];
  const W = 190, H = 58, GAP = 40;
  // Sources stacked in the first column; a join when there are several; then the stages; the sink.
  const sources = q.sources.length ? q.sources : ["?"];
  const columns = [sources.map((s) => ({ kind: "source", title: s, lines: ["source"], count: null }))];
  if (sources.length > 1) columns.push([{ kind: "op", title: "Join", lines: [`${fmt(q.consumed)} records read`] }]);
  else columns[0][0].lines = [`${fmt(q.consumed)} records read`];
  for (const st of q.stages) {
    const first = st.plan.split("\n").map((l) => l.trim()).filter(Boolean);
    const title = first.map((l) => l.split(":")[0]).filter((v, i, a) => a.indexOf(v) === i).join(" + ");
    columns.push([{ kind: "op", title: title || "Stage", detail: st.plan, lines: [`in ${fmt(st.rowsIn)} → out ${fmt(st.rowsOut)}`] }]);
  }
  columns.push([{ kind: "sink", title: q.sink, lines: [`${fmt(q.produced)} written`, q.errors ? `${fmt(q.errors)} to processing log` : ""] }]);
  const rows = Math.max(...columns.map((c) => c.length));
  svg.setAttribute("width", columns.length * (W + GAP));
  svg.setAttribute("height", rows * (H + 14) + 10);
  svg.innerHTML = `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#8a96a3"/></marker></defs>`;
  columns.forEach((col, ci) => col.forEach((n, ri) => {
    n.x = ci * (W + GAP) + 4; n.y = ri * (H + 14) + 6 + (rows - col.length) * (H + 14) / 2;
    nodes.push(n);
  }));
  for (let ci = 1; ci < columns.length; ci++) {
    for (const a of columns[ci - 1]) for (const b of columns[ci]) {
      const p = document.createElementNS(NS, "path");
      p.setAttribute("class", "edge");
      p.setAttribute("d", `M${a.x + W},${a.y + H / 2} C${a.x + W + GAP / 2},${a.y + H / 2} ${b.x - GAP / 2},${b.y + H / 2} ${b.x},${b.y + H / 2}`);
      svg.append(p);
    }
  }
  for (const n of nodes) {
    const g = document.createElementNS(NS, "g");
    g.setAttribute("class", `node ${n.kind}`);
    g.innerHTML = `<rect x="${n.x}" y="${n.y}" width="${W}" height="${H}"></rect>`;
    const t = document.createElementNS(NS, "text");
    t.setAttribute("x", n.x + 8); t.setAttribute("y", n.y + 18);
    t.textContent = clip(n.title, 24);
    g.append(t);
    n.lines.filter(Boolean).forEach((line, i) => {
      const c = document.createElementNS(NS, "text");
      c.setAttribute("class", "count");
      c.setAttribute("x", n.x + 8); c.setAttribute("y", n.y + 36 + i * 15);
      c.textContent = clip(line, 26);
      g.append(c);
    });
    const tip = document.createElementNS(NS, "title");
    tip.textContent = n.detail || n.title;
    g.append(tip);
    svg.append(g);
  }
  return el("div", { class: "pipeline", "data-query": q.id },
    el("h3", {}, `${q.id} `, el("span", { class: `state-${q.state}` }, q.state)),
    q.error ? el("div", { class: "muted" }, q.error) : "", svg);
}
const clip = (s, n) => (s.length > n ? s.slice(0, n - 1) + "…" : s);

const COLORS = ["#1f6feb", "#e8590c", "#2e7d32", "#8e24aa", "#c62828", "#00838f", "#6d4c41", "#5c6bc0"];

function lineChart(canvas, series, opts = {}) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 40;
  ctx.clearRect(0, 0, w, h);
  const all = series.flatMap((s) => s.points);
  if (!all.length) { ctx.fillStyle = "#6b7480"; ctx.fillText(opts.empty || "no data yet", pad, h / 2); return; }
  let x0 = Math.min(...all.map((p) => p[0])), x1 = Math.max(...all.map((p) => p[0]));
  let y0 = Math.min(0, ...all.map((p) => p[1])), y1 = Math.max(...all.map((p) => p[1]));
  if (opts.threshold != null && Number.isFinite(opts.threshold)) { y0 = Math.min(y0, opts.threshold); y1 = Math.max(y1, opts.threshold); }
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) y1 = y0 + 1;
  const X = (x) => pad + (x - x0) / (x1 - x0) * (w - pad - 10);
  const Y = (y) => h - 20 - (y - y0) / (y1 - y0) * (h - 30);
  ctx.strokeStyle = "#d9dde2"; ctx.fillStyle = "#6b7480"; ctx.font = "11px sans-serif";
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4;
    ctx.beginPath(); ctx.moveTo(pad, Y(y)); ctx.lineTo(w - 10, Y(y)); ctx.stroke();
    ctx.fillText(fmt(Math.round(y * 100) / 100), 2, Y(y) + 4);
  }
  series.forEach((s, i) => {
    ctx.strokeStyle = s.color || COLORS[i % COLORS.length]; ctx.lineWidth = 1.5;
    ctx.beginPath();
    s.points.forEach(([x, y], j) => (j ? ctx.lineTo(X(x), Y(y)) : ctx.moveTo(X(x), Y(y))));
    ctx.stroke();
  });
  if (opts.threshold != null && Number.isFinite(opts.threshold)) {
    ctx.strokeStyle = "#c62828"; ctx.setLineDash([6, 4]);
    ctx.beginPath(); ctx.moveTo(pad, Y(opts.threshold)); ctx.lineTo(w - 10, Y(opts.threshold)); ctx.stroke();
    ctx.setLineDash([]); ctx.fillStyle = "#c62828"; ctx.fillText(`threshold ${opts.threshold}`, w - 110, Y(opts.threshold) - 4);
  }
}

function drawMetricCharts() {
  const ids = [...history.keys()];
  const rates = ids.map((id) => {
    const h = history.get(id);
    const points = [];
    for (let i = 1; i < h.length; i++) {
      const dt = h[i].t - h[i - 1].t;
      if (dt > 0) points.push([h[i].t, Math.max(0, (h[i].consumed - h[i - 1].consumed) / dt)]);
    }
    return { id, points };
  });
  lineChart($("#rate-chart"), rates);
  lineChart($("#lag-chart"), ids.map((id) => ({ id, points: history.get(id).map((p) => [p.t, p.lag]) })));
  $("#rate-legend").replaceChildren(...ids.map((id, i) => el("span", {}, el("i", { style: `background:${COLORS[i % COLORS.length]}` }), id)));
}

// ---------- processing log ----------

async function refreshProcessingLog() {
  let entries;
  try { entries = await http("/console/api/processing-log?limit=100"); } catch { return; }
  $("#plog tbody").replaceChildren(...entries.map((e) => {
    const v = e.entry || {};
    return el("tr", {}, el("td", {}, new Date(e.timestamp).toISOString().replace("T", " ").replace("Z", "")),
      el("td", {}, v.QUERY_ID ?? ""), el("td", {}, v.TOPIC ?? ""), el("td", {}, String(v.PARTITION ?? "")),
      el("td", {}, String(v.OFFSET ?? "")), el("td", { title: v.MESSAGE ?? "" }, clip(String(v.MESSAGE ?? JSON.stringify(v)), 160)));
  }));
}

// ---------- editor: highlighting, completion, errors ----------

const editor = $("#editor");
let errorAt = null; // {line, column}

function escapeHtml(s) { return s.replace(/[&<>]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;" })[c]); }

function highlight() {
  const text = editor.value;
  const names = new Set([...catalog.streams, ...catalog.tables].map((s) => s.name.toUpperCase()));
  const fns = new Set(catalog.functions.map((f) => f.name.toUpperCase()));
  const re = /(--[^\n]*)|('(?:[^']|'')*'?)|(`[^`]*`?)|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_]*)|(\s+|.)/g;
  let out = "", m, pos = 0;
  const errOffset = errorAt ? offsetOf(text, errorAt.line, errorAt.column) : -1;
  while ((m = re.exec(text))) {
    const [tok] = m;
    let cls = m[1] ? "tk-com" : m[2] ? "tk-str" : m[4] ? "tk-num" : m[3] ? "tk-name" : null;
    if (m[5]) {
      const up = tok.toUpperCase();
      cls = KEYWORD_SET.has(up) ? "tk-kw" : fns.has(up) ? "tk-fn" : names.has(up) ? "tk-name" : null;
    }
    if (errOffset >= pos && errOffset < pos + tok.length && tok.trim()) cls = (cls ? cls + " " : "") + "tk-err";
    out += cls ? `<span class="${cls}">${escapeHtml(tok)}</span>` : escapeHtml(tok);
    pos += tok.length;
  }
  $("#highlight").innerHTML = out + "\n";
  $("#highlight").scrollTop = editor.scrollTop;
}

function offsetOf(text, line, column) {
  const lines = text.split("\n");
  let off = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) off += lines[i].length + 1;
  return off + column - 1;
}

let completion = { items: [], active: 0, start: 0 };

function candidates(prefix) {
  const up = prefix.toUpperCase();
  const seen = new Set();
  const out = [];
  const add = (label, kind) => {
    if (label.toUpperCase().startsWith(up) && label.toUpperCase() !== up && !seen.has(label)) { seen.add(label); out.push({ label, kind }); }
  };
  for (const s of catalog.streams) add(s.name, "stream");
  for (const t of catalog.tables) add(t.name, "table");
  for (const f of catalog.functions) add(f.name, "function");
  for (const k of KEYWORDS) add(k, "keyword");
  return out.slice(0, 50);
}

function updateCompletions(force = false) {
  const upto = editor.value.slice(0, editor.selectionStart);
  const m = /[A-Za-z_][A-Za-z0-9_]*$/.exec(upto);
  const prefix = m ? m[0] : "";
  const list = $("#completions");
  if (!prefix && !force) { list.hidden = true; return; }
  const items = candidates(prefix);
  if (!items.length) { list.hidden = true; return; }
  completion = { items, active: 0, start: editor.selectionStart - prefix.length };
  // Monospace: the caret's place from its line and column.
  const lines = upto.split("\n");
  const charW = measureChar(), lineH = 19.5;
  list.style.left = `${8 + Math.min(lines[lines.length - 1].length - prefix.length, 80) * charW}px`;
  list.style.top = `${8 + lines.length * lineH - editor.scrollTop}px`;
  list.replaceChildren(...items.map((it, i) => el("li", { class: i ? "" : "active", onmousedown: (e) => { e.preventDefault(); accept(i); } },
    it.label, el("small", {}, it.kind))));
  list.hidden = false;
}

let charWidth = 0;
function measureChar() {
  if (!charWidth) {
    const probe = el("span", { style: "font:13px var(--mono);position:absolute;visibility:hidden" }, "M".repeat(50));
    document.body.append(probe);
    charWidth = probe.getBoundingClientRect().width / 50 || 7.8;
    probe.remove();
  }
  return charWidth;
}

function accept(i) {
  const it = completion.items[i];
  if (!it) return;
  const v = editor.value;
  const insert = it.kind === "function" ? it.label + "(" : it.label;
  editor.value = v.slice(0, completion.start) + insert + v.slice(editor.selectionStart);
  editor.selectionStart = editor.selectionEnd = completion.start + insert.length;
  $("#completions").hidden = true;
  highlight();
  editor.focus();
}

editor.addEventListener("input", () => { errorAt = null; highlight(); updateCompletions(); });
editor.addEventListener("scroll", () => { $("#highlight").scrollTop = editor.scrollTop; });
editor.addEventListener("blur", () => setTimeout(() => ($("#completions").hidden = true), 100));
editor.addEventListener("keydown", (e) => {
  const list = $("#completions");
  if ((e.ctrlKey || e.metaKey) && e.key === "Enter") { e.preventDefault(); run(); return; }
  if (e.ctrlKey && e.key === " ") { e.preventDefault(); updateCompletions(true); return; }
  if (list.hidden) return;
  if (e.key === "ArrowDown" || e.key === "ArrowUp") {
    e.preventDefault();
    const n = completion.items.length;
    completion.active = (completion.active + (e.key === "ArrowDown" ? 1 : n - 1)) % n;
    [...list.children].forEach((li, i) => li.classList.toggle("active", i === completion.active));
    list.children[completion.active].scrollIntoView({ block: "nearest" });
  } else if (e.key === "Enter" || e.key === "Tab") {
    e.preventDefault(); accept(completion.active);
  } else if (e.key === "Escape") {
    list.hidden = true;
  }
});

function showError(message) {
  const m = /line (\d+):(\d+)/.exec(message);
  errorAt = m ? { line: +m[1], column: +m[2] } : null;
  $("#error").hidden = false;
  $("#error").textContent = (errorAt ? `Error at line ${errorAt.line}, column ${errorAt.column}: ` : "Error: ") + message;
  $("#error").dataset.line = errorAt ? errorAt.line : "";
  $("#error").dataset.column = errorAt ? errorAt.column : "";
  highlight();
}

function clearError() { errorAt = null; $("#error").hidden = true; $("#error").textContent = ""; highlight(); }

// ---------- running statements and queries ----------

let active = null; // {controller, queryId}
const results = { columns: [], types: [], pending: [], shown: 0, received: 0, paused: false, points: [], chartColumn: -1 };

async function run() {
  const sql = (editor.selectionStart !== editor.selectionEnd
    ? editor.value.slice(editor.selectionStart, editor.selectionEnd) : editor.value).trim();
  if (!sql) return;
  clearError();
  await stop();
  const body = sql.replace(/^(\s*--[^\n]*\n)*/, "").trimStart();
  if (/^SELECT\b/i.test(body)) return runQuery(sql);
  setStatus("running…");
  try {
    const entities = await ksql(sql, earliest());
    $("#messages").textContent = entities.map(entityText).join("\n\n");
    showTab("results");
    setStatus(`${entities.length} statement(s) done`);
    refreshCatalog(false);
    refreshQueries();
  } catch (err) {
    showError(err.message);
    setStatus("failed");
  }
}

const earliest = () => ($("#earliest").checked ? { "auto.offset.reset": "earliest" } : {});

function entityText(e) {
  if (e["@type"] === "currentStatus") return `${e.commandStatus?.status}: ${e.commandStatus?.message || ""}`;
  if (e.streams || e.tables) return (e.streams || e.tables).map((s) => `${s.name}\t${s.topic}\t${s.valueFormat || ""}`).join("\n");
  if (e.queries) return e.queries.map((q) => `${q.id}\t${q.state || ""}\t${q.queryString}`).join("\n");
  return describeText(e);
}

function setStatus(s) { $("#status").textContent = s; }

async function runQuery(sql) {
  const controller = new AbortController();
  active = { controller, queryId: null };
  $("#stop").disabled = false;
  resetResults();
  $("#messages").textContent = "";
  if ($("#tab-charts").hidden) showTab("results");
  setStatus("starting query…");
  let response;
  try {
    response = await fetch("/query-stream", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/vnd.ksqlapi.delimited.v1" },
      body: JSON.stringify({ sql, properties: earliest() }),
      signal: controller.signal,
    });
  } catch (err) { setStatus(String(err)); return; }
  if (!response.ok) {
    const text = await response.text();
    let msg = text;
    try { msg = JSON.parse(text).message || text; } catch { /* plain text */ }
    showError(msg);
    setStatus("failed");
    active = null; $("#stop").disabled = true;
    return;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      // A burst is taken in slices, the page drawing between them, so it never freezes.
      const lines = buffered.split("\n");
      buffered = lines.pop();
      for (let i = 0; i < lines.length; i++) {
        if (!active || active.controller !== controller) return; // stopped, or another query runs
        const line = lines[i].trim();
        if (line) onLine(JSON.parse(line));
        if (i % 2000 === 1999) await new Promise((r) => setTimeout(r, 0));
      }
    }
    if (buffered.trim()) onLine(JSON.parse(buffered));
    setStatus(`done: ${results.received} rows`);
  } catch (err) {
    if (err.name !== "AbortError") setStatus(`stream ended: ${err.message}`);
  } finally {
    if (active && active.controller === controller) { active = null; $("#stop").disabled = true; }
  }
}

function onLine(v) {
  if (Array.isArray(v)) {
    results.pending.push(v);
    results.received++;
    const ci = results.chartColumn;
    if (ci >= 0 && typeof v[ci] === "number") {
      results.points.push([results.received, v[ci]]);
      if (results.points.length > 5000) results.points.splice(0, results.points.length - 5000);
    }
    scheduleRender();
  } else if (v.columnNames) {
    if (active) active.queryId = v.queryId;
    results.columns = v.columnNames;
    results.types = v.columnTypes || [];
    $("#results thead").replaceChildren(el("tr", {}, ...v.columnNames.map((c) => el("th", {}, c))));
    fillColumnChoice();
    setStatus(`query ${v.queryId || ""} running`);
  } else if (v.message || v.errorMessage) {
    showError(v.message || v.errorMessage?.message || JSON.stringify(v));
  } else if (v.finalMessage) {
    setStatus(v.finalMessage);
  }
}

async function stop() {
  const a = active;
  if (!a) return;
  active = null;
  $("#stop").disabled = true;
  a.controller.abort();
  if (a.queryId) {
    try { await http("/close-query", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ queryId: a.queryId }) }); } catch { /* gone already */ }
  }
  setStatus("stopped");
}

function resetResults() {
  results.pending = []; results.received = 0; results.shown = 0; results.points = []; results.chartColumn = -1;
  $("#results tbody").replaceChildren();
  $("#results thead").replaceChildren();
  $("#row-count").textContent = "";
}

let renderScheduled = false;
function scheduleRender() {
  if (renderScheduled) return;
  renderScheduled = true;
  requestAnimationFrame(render);
}

// Rows arrive faster than a page can draw them one by one: each frame draws what came
// since the last (the newest `cap` of them) in one go, and trims the table to the cap.
function render() {
  renderScheduled = false;
  const cap = Math.max(10, +$("#cap").value || 1000);
  if (!results.paused && results.pending.length) {
    const rows = results.pending.length > cap ? results.pending.slice(-cap) : results.pending;
    results.pending = [];
    const frag = document.createDocumentFragment();
    for (const r of rows) {
      const tr = document.createElement("tr");
      for (const c of r) {
        const td = document.createElement("td");
        td.textContent = c === null ? "null" : typeof c === "object" ? JSON.stringify(c) : String(c);
        tr.append(td);
      }
      frag.append(tr);
    }
    const body = $("#results tbody");
    body.append(frag);
    while (body.childElementCount > cap) body.firstElementChild.remove();
    results.shown = body.childElementCount;
  } else if (results.paused && results.pending.length > cap) {
    results.pending.splice(0, results.pending.length - cap);
  }
  $("#row-count").textContent = `${results.received} rows received, ${results.shown} shown${results.paused ? " (paused)" : ""}`;
  if (!$("#tab-charts").hidden) drawColumnChart();
}

// ---------- the push query's numeric column chart ----------

const NUMERIC = /^(INT|INTEGER|BIGINT|DOUBLE|DECIMAL)/i;
function fillColumnChoice() {
  const select = $("#column");
  const numeric = results.columns.filter((_, i) => NUMERIC.test(results.types[i] || ""));
  const wanted = select.dataset.wanted;
  select.replaceChildren(...numeric.map((c) => el("option", { value: c }, c)));
  if (wanted && numeric.includes(wanted)) select.value = wanted;
  else if (numeric.length > 1) select.value = numeric[numeric.length - 1];
  results.chartColumn = columnIndex();
}
const columnIndex = () => results.columns.indexOf($("#column").value);

function drawColumnChart() {
  const t = parseFloat($("#threshold").value);
  lineChart($("#column-chart"), [{ points: results.points, color: "#1f6feb" }],
    { threshold: Number.isFinite(t) ? t : null, empty: "run a push query with a numeric column" });
  $("#points").textContent = `${results.points.length} points`;
}
$("#column").addEventListener("change", () => {
  const ci = (results.chartColumn = columnIndex());
  results.points = [];
  // Rows still shown are charted again for the new column.
  [...$("#results tbody").children].forEach((tr, i) => {
    const v = parseFloat(tr.children[ci]?.textContent);
    if (Number.isFinite(v)) results.points.push([i + 1, v]);
  });
  drawColumnChart();
});
$("#threshold").addEventListener("input", drawColumnChart);

// ---------- tabs, buttons, start-up ----------

function showTab(name) {
  for (const b of document.querySelectorAll("#tabs button")) b.setAttribute("aria-selected", String(b.dataset.tab === name));
  for (const s of document.querySelectorAll(".tab")) s.hidden = s.id !== `tab-${name}`;
  if (name === "pipelines") drawPipelines();
  if (name === "charts") { drawMetricCharts(); drawColumnChart(); }
  if (name === "plog") refreshProcessingLog();
}
for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
$("#run").addEventListener("click", run);
$("#stop").addEventListener("click", stop);
$("#pause").addEventListener("click", () => {
  results.paused = !results.paused;
  $("#pause").textContent = results.paused ? "Resume" : "Pause";
  scheduleRender();
});
$("#clear").addEventListener("click", () => { $("#results tbody").replaceChildren(); results.pending = []; results.shown = 0; results.points = []; scheduleRender(); });
$("#function-filter").addEventListener("input", renderFunctions);

async function refreshHealth() {
  try {
    const h = await http("/healthcheck");
    $("#health").textContent = h.isHealthy ? "healthy" : "unhealthy";
    $("#health").className = `badge ${h.isHealthy ? "ok" : "bad"}`;
  } catch {
    $("#health").textContent = "unreachable";
    $("#health").className = "badge bad";
  }
}

async function start() {
  try {
    const info = await http("/info");
    const i = info.KsqlServerInfo || {};
    $("#server-info").textContent = `${i.serverStatus || ""} · version ${i.version || "?"} · service ${i.ksqlServiceId || ""}`;
  } catch { /* shown by the health badge */ }
  await refreshCatalog(true);
  highlight();
  refreshQueries();
  refreshHealth();
  setInterval(() => refreshCatalog(false), 3000);
  setInterval(() => refreshCatalog(true), 30000);
  setInterval(refreshQueries, 1000);
  setInterval(refreshHealth, 5000);
  setInterval(() => { if (!$("#tab-plog").hidden) refreshProcessingLog(); }, 2000);
  // A link can open the console on a query and its chart: ?q=SQL&column=NAME&threshold=N&earliest=1
  const params = new URLSearchParams(location.search);
  if (params.get("column")) $("#column").dataset.wanted = params.get("column");
  if (params.get("threshold")) $("#threshold").value = params.get("threshold");
  if (params.get("earliest")) $("#earliest").checked = true;
  if (params.get("q")) {
    editor.value = params.get("q");
    highlight();
    if (params.get("tab")) showTab(params.get("tab"));
    run();
  }
}

start();
