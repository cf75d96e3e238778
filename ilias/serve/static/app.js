// The ilias page: search (upload, drop, stored id, text) and the evaluation explorer.
// Plain JavaScript over the service's own JSON API; nothing is fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { collection: null, file: null, runs: [] };

// ----------------------------------------------------------------- API and helpers
// An API key is typed once and traded for an HttpOnly session cookie (POST /api/session);
// after that every call and every <img> is authorised by the cookie, so no URL, history
// entry or access-log line ever carries the key.
async function startSession(key) {
  const answer = await fetch("/api/session", { method: "POST", headers: { "X-API-Key": key } });
  if (!answer.ok) {
    const body = await answer.json().catch(() => ({}));
    throw new Error(body.detail || `${answer.status} ${answer.statusText}`);
  }
}

async function api(url, options = {}) {
  const answer = await fetch(url, Object.assign({ credentials: "same-origin" }, options));
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new Error(body.detail || `${answer.status} ${answer.statusText}`);
  return body;
}

function say(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

const fmt = (x, digits = 3) => (x === null || x === undefined ? "-" : Number(x).toFixed(digits));

// ----------------------------------------------------------------- tabs
function showView(name) {
  for (const view of ["search", "explorer"]) {
    const selected = view === name;
    $(`tab-${view}`).setAttribute("aria-selected", String(selected));
    $(`view-${view}`).hidden = !selected;
  }
  if (name === "explorer") loadRuns();
}
$("tab-search").addEventListener("click", () => showView("search"));
$("tab-explorer").addEventListener("click", () => showView("explorer"));

// ----------------------------------------------------------------- collections
async function loadCollections() {
  try {
    const answer = await api("/api/collections");
    const select = $("collection");
    select.replaceChildren();
    for (const c of answer.collections) {
      const label = `${c.name} (${c.points} points, ${c.encoder || "no encoder"})`;
      select.append(el("option", { value: c.name, text: label }));
    }
    for (const alias of Object.keys(answer.aliases)) {
      select.append(el("option", { value: alias, text: `${alias} (alias of ${answer.aliases[alias]})` }));
    }
    select.value = answer.default;
    if (!select.value && select.options.length) select.selectedIndex = 0;
    state.collection = select.value || null;
    say(state.collection ? `store ${answer.store}` : `no collections in ${answer.store}`);
  } catch (error) {
    say(error.message, true);
  }
}
$("collection").addEventListener("change", (e) => { state.collection = e.target.value; });
$("api-key").addEventListener("change", async () => {
  const field = $("api-key");
  const key = field.value.trim();
  field.value = "";  // the cookie holds the session; the key stays nowhere in the page
  if (!key) return;
  try {
    await startSession(key);
    say("signed in");
    loadCollections();
  } catch (error) { say(error.message, true); }
});

// ----------------------------------------------------------------- search form
const drop = $("drop");
function chooseFile(file) {
  state.file = file || null;
  $("drop-text").textContent = file ? `image: ${file.name}` : "Drop an image here or choose a file";
  if (file) $("stored-id").value = "";
}
$("file").addEventListener("change", (e) => chooseFile(e.target.files[0]));
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) { chooseFile(e.dataTransfer.files[0]); search(); }
});
$("stored-id").addEventListener("input", () => { if ($("stored-id").value) { state.file = null; $("file").value = ""; chooseFile(null); } });
$("search-form").addEventListener("submit", (e) => { e.preventDefault(); search(); });

function searchRequest() {
  const request = { k: Number($("k").value) || 20 };
  const where = $("where").value.split(/[;\n]/).map((s) => s.trim()).filter(Boolean);
  if (where.length) request.where = where;
  const text = $("text").value.trim();
  if (text) request.text = text;
  const id = $("stored-id").value.trim();
  if (id && !state.file) request.id = id;
  return request;
}

async function search() {
  if (!state.collection) { say("choose a collection first", true); return; }
  const request = searchRequest();
  const base = `/api/collections/${encodeURIComponent(state.collection)}`;
  say("searching...");
  try {
    let answer;
    if (state.file) {
      const form = new FormData();
      form.append("image", state.file);
      form.append("query", JSON.stringify(request));
      answer = await api(`${base}/search/image`, { method: "POST", body: form });
    } else {
      answer = await api(`${base}/search`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(request),
      });
    }
    showQuery(request);
    showResults(answer);
    say(`${answer.hits.length} hits for ${answer.query} in ${answer.collection}`);
  } catch (error) {
    say(error.message, true);
  }
}

function showQuery(request) {
  const view = $("query-view");
  view.replaceChildren();
  let src = null;
  if (state.file) src = URL.createObjectURL(state.file);
  else if (request.id) src = `/api/collections/${encodeURIComponent(state.collection)}/thumbnail?id=${encodeURIComponent(request.id)}`;
  if (src) view.append(el("img", { src, alt: "query image", id: "query-image" }));
  const parts = [];
  if (state.file) parts.push(`uploaded ${state.file.name}`);
  if (request.id) parts.push(`stored ${request.id}`);
  if (request.text) parts.push(`text "${request.text}"`);
  view.append(el("div", { id: "query-label", text: `Query: ${parts.join(" + ")}` }));
}

function showResults(answer) {
  const timings = Object.entries(answer.timings_ms).map(([k, v]) => `${k} ${v.toFixed(1)} ms`);
  $("timings").textContent = timings.join(" | ");
  const grid = $("results");
  grid.replaceChildren();
  for (const hit of answer.hits) {
    const details = JSON.stringify(hit.payload, null, 1);
    const card = el("button", {
      type: "button",
      "aria-label": `rank ${hit.rank}, ${hit.id}, score ${fmt(hit.score)}; search with it`,
      "data-id": hit.id,
      onclick: () => moreLikeThis(hit.id),
      onmouseenter: (e) => tooltip(e, details),
      onmousemove: (e) => tooltip(e, details),
      onmouseleave: () => tooltip(null),
      onfocus: (e) => tooltip(e, details),
      onblur: () => tooltip(null),
    },
      el("img", { src: hit.thumbnail, alt: hit.id, loading: "lazy" }),
      el("div", { class: "meta" },
        el("span", { class: "score", text: `#${hit.rank}  ${fmt(hit.score)}` }),
        el("br"),
        el("span", { text: hit.id })));
    grid.append(el("li", {}, card));
  }
}

function tooltip(event, text) {
  const tip = $("tooltip");
  if (!event) { tip.hidden = true; return; }
  tip.textContent = text;
  tip.hidden = false;
  const rect = event.target.getBoundingClientRect();
  const x = event.clientX || rect.right;
  const y = event.clientY || rect.top;
  tip.style.left = `${Math.min(x + 14, window.innerWidth - 370)}px`;
  tip.style.top = `${Math.min(y + 14, window.innerHeight - tip.offsetHeight - 8)}px`;
}

function moreLikeThis(id) {
  state.file = null;
  $("file").value = "";
  chooseFile(null);
  $("stored-id").value = id;
  $("text").value = "";
  tooltip(null);
  search();
}

// ----------------------------------------------------------------- evaluation explorer
async function loadRuns() {
  if (state.runs.length) return;
  try {
    state.runs = await api("/api/runs");
  } catch (error) { say(error.message, true); return; }
  const a = $("run-a"), b = $("run-b");
  a.replaceChildren();
  b.replaceChildren(el("option", { value: "", text: "(none)" }));
  for (const run of state.runs) {
    const label = `${run.name} (mAP ${fmt(run.map, 2)})`;
    a.append(el("option", { value: run.name, text: label }));
    b.append(el("option", { value: run.name, text: label }));
  }
  if (!state.runs.length) { say("no evaluation runs: start the service with --runs DIR"); return; }
  showRun();
}
$("run-a").addEventListener("change", showRun);
$("run-b").addEventListener("change", showComparison);
$("run-k").addEventListener("change", () => { if (state.query) showQueryDetail(state.query); });
$("runs-form").addEventListener("submit", (e) => e.preventDefault());

async function showRun() {
  const run = $("run-a").value;
  if (!run) return;
  try {
    const detail = await api(`/api/runs/${encodeURIComponent(run)}`);
    $("run-title").textContent = `${run}: ${detail.queries.length} queries, mAP@${detail.run.k} ${fmt(detail.run.map, 2)}`;
    const list = $("query-list");
    list.replaceChildren();
    for (const q of detail.queries) {
      list.append(el("li", {}, el("button", {
        type: "button", "data-query": q.query_id, onclick: () => showQueryDetail(q.query_id),
      }, el("span", { text: q.query_id }), el("span", { class: "ap", text: fmt(q.ap) }))));
    }
    say(`run ${run}: queries sorted by AP, lowest first`);
    if (detail.queries.length) showQueryDetail(detail.queries[0].query_id);
    showComparison();
  } catch (error) { say(error.message, true); }
}

async function showQueryDetail(queryId) {
  const run = $("run-a").value;
  state.query = queryId;
  for (const button of document.querySelectorAll("#query-list button")) {
    button.setAttribute("aria-current", String(button.dataset.query === queryId));
  }
  const k = Number($("run-k").value) || 20;
  try {
    const q = await api(`/api/runs/${encodeURIComponent(run)}/query?id=${encodeURIComponent(queryId)}&k=${k}`);
    const box = $("query-detail");
    box.replaceChildren(
      el("div", { class: "query-head" },
        el("img", { src: q.image, alt: `query ${q.query_id}` }),
        el("div", {},
          el("h2", { text: q.query_id }),
          el("div", { text: `AP ${fmt(q.ap)} - ${q.n_positives} positives` }),
          el("div", { class: "legend" }, el("span", { class: "pos", text: "positive" }), el("span", { class: "neg", text: "distractor" })))),
      el("h2", { text: `Top ${q.hits.length}` }));
    const grid = el("ol", { class: "grid", id: "ranked", "aria-label": "Ranked results" });
    for (const hit of q.hits) {
      grid.append(el("li", {}, el("div", {
        class: `card ${hit.positive ? "positive" : "distractor"}`,
        title: `${hit.id}\nscore ${fmt(hit.score, 4)}`,
      },
        el("img", { src: hit.thumbnail, alt: hit.id, loading: "lazy" }),
        el("div", { class: "meta", text: `#${hit.rank} ${fmt(hit.score)} ${hit.positive ? "positive" : ""}` }))));
    }
    box.append(grid);
    box.append(el("h2", { text: q.missed.length ? `Missed positives (${q.missed.length})` : "No positive missed" }));
    const missed = el("ol", { class: "grid", id: "missed", "aria-label": "Missed positives" });
    for (const m of q.missed) {
      missed.append(el("li", {}, el("div", { class: "card positive", title: m.id },
        el("img", { src: m.thumbnail, alt: m.id, loading: "lazy" }),
        el("div", { class: "meta", text: `${m.rank ? "rank " + m.rank : "not in the ranking"} - ${m.id}` }))));
    }
    box.append(missed);
  } catch (error) { say(error.message, true); }
}

async function showComparison() {
  const a = $("run-a").value, b = $("run-b").value;
  const out = $("comparison");
  out.replaceChildren();
  if (!a || !b) return;
  try {
    const c = await api(`/api/runs/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
    out.append(scatter(c), differences(c));
  } catch (error) { say(error.message, true); }
}

function scatter(c) {
  const size = 300, pad = 34, span = size - 2 * pad;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("width", size);
  svg.setAttribute("height", size);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `per-query AP, ${c.a.name} against ${c.b.name}`);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text) node.textContent = text;
    svg.append(node);
    return node;
  };
  add("rect", { x: pad, y: pad, width: span, height: span, fill: "none", stroke: "#d5dae0" });
  add("line", { x1: pad, y1: pad + span, x2: pad + span, y2: pad, stroke: "#aab", "stroke-dasharray": "4 3" });
  add("text", { x: size / 2, y: size - 6, "text-anchor": "middle", "font-size": 12 }, `AP ${c.a.name}`);
  add("text", { x: 12, y: size / 2, "text-anchor": "middle", "font-size": 12, transform: `rotate(-90 12 ${size / 2})` }, `AP ${c.b.name}`);
  for (const q of c.queries) {
    const dot = add("circle", {
      cx: pad + q.ap_a * span, cy: pad + (1 - q.ap_b) * span, r: 5,
      fill: q.delta > 0 ? "#1a9e3a" : q.delta < 0 ? "#d0342c" : "#5d6670", "fill-opacity": 0.75,
    });
    const title = document.createElementNS(ns, "title");
    title.textContent = `${q.query_id}: ${fmt(q.ap_a)} -> ${fmt(q.ap_b)}`;
    dot.append(title);
  }
  return svg;
}

function differences(c) {
  const table = el("table", { "aria-label": "Queries where the runs differ most" },
    el("caption", { text: `Largest differences, ${c.b.name} - ${c.a.name}` }),
    el("tr", {}, el("th", { text: "query" }), el("th", { text: c.a.name }), el("th", { text: c.b.name }), el("th", { text: "B - A" })));
  for (const q of c.queries.slice(0, 15)) {
    table.append(el("tr", {},
      el("td", {}, el("button", { type: "button", onclick: () => showQueryDetail(q.query_id), text: q.query_id })),
      el("td", { class: "num", text: fmt(q.ap_a) }), el("td", { class: "num", text: fmt(q.ap_b) }),
      el("td", { class: "num", text: (q.delta > 0 ? "+" : "") + fmt(q.delta) })));
  }
  return table;
}

// ----------------------------------------------------------------- start
loadCollections();

// ----------------------------------------------------------------- writes (ilias serve --writes)
// Shown only when the service says writes are on. Each dropped or chosen file becomes one
// point, id = prefix + file name, encoded by the service exactly as a load would.
const adding = { files: [] };
// Writes carry this header: the service refuses a write authorised by the session cookie
// alone, since only a page of this origin can add a custom header (no cross-site forgery).
const WRITE_HEADERS = { "X-Requested-With": "ilias-page" };

async function showWrites() {
  try {
    const answer = await api("/api/writes");
    $("writes").hidden = !answer.writes;
  } catch (error) {
    $("writes").hidden = true;
  }
}

function chooseAdded(files) {
  adding.files = Array.from(files || []);
  $("add-text").textContent = adding.files.length
    ? `${adding.files.length} image(s): ${adding.files.map((f) => f.name).join(", ")}`
    : "Add images: drop them here or choose files";
}

async function addImages() {
  if (!state.collection) { say("choose a collection first", true); return; }
  if (!adding.files.length) { say("choose or drop images to add first", true); return; }
  const base = `/api/collections/${encodeURIComponent(state.collection)}/images`;
  const prefix = $("add-prefix").value.trim();
  let last = null;
  for (const [i, file] of adding.files.entries()) {
    say(`adding ${i + 1} of ${adding.files.length}: ${file.name}...`);
    const form = new FormData();
    form.append("image", file);
    form.append("id", prefix + file.name);
    try {
      last = await api(base, { method: "POST", body: form, headers: WRITE_HEADERS });
    } catch (error) {
      say(`${file.name}: ${error.message}`, true);
      return;
    }
  }
  const added = adding.files.length;
  chooseAdded([]);
  $("add-files").value = "";
  const target = state.collection;
  await refreshCollections(); // the point counts in the menu; then the message it would replace
  say(`added ${added} image(s) to ${target}; ${last.points} points`);
}

async function refreshCollections() {
  const chosen = state.collection;
  await loadCollections();
  if ([...$("collection").options].some((o) => o.value === chosen)) {
    $("collection").value = chosen;
    state.collection = chosen;
  }
}

async function deletePoint() {
  const id = $("delete-id").value.trim();
  if (!state.collection || !id) { say("give the id of the point to delete", true); return; }
  if (!window.confirm(`delete ${id} from ${state.collection}?`)) return;
  const url = `/api/collections/${encodeURIComponent(state.collection)}/points/${id.split("/").map(encodeURIComponent).join("/")}`;
  try {
    const answer = await api(url, { method: "DELETE", headers: WRITE_HEADERS });
    $("delete-id").value = "";
    await refreshCollections();
    say(`deleted ${id} from ${answer.collection}; ${answer.points} points left`);
  } catch (error) {
    say(error.message, true);
  }
}

const addDrop = $("add-drop");
$("add-files").addEventListener("change", (e) => chooseAdded(e.target.files));
addDrop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("add-files").click(); } });
addDrop.addEventListener("dragover", (e) => { e.preventDefault(); addDrop.classList.add("over"); });
addDrop.addEventListener("dragleave", () => addDrop.classList.remove("over"));
addDrop.addEventListener("drop", (e) => {
  e.preventDefault();
  addDrop.classList.remove("over");
  chooseAdded(e.dataTransfer.files);
});
$("add-form").addEventListener("submit", (e) => { e.preventDefault(); addImages(); });
$("delete-form").addEventListener("submit", (e) => { e.preventDefault(); deletePoint(); });
$("api-key").addEventListener("change", showWrites);
showWrites();
