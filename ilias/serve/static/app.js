// The ilias page: search (upload, drop, stored id, text, a region drawn on the query),
// why a result matched, browsing the collection, and the evaluation explorer.
// Plain JavaScript over the service's own JSON API; nothing is fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  collection: null, file: null, runs: [], caps: null,
  query: null,       // what the shown query image is: {kind: "file", file} or {kind: "id", id}
  box: null,         // the drawn region, [x, y, w, h] in the query image's pixels
  suggested: null,   // a box the query's payload holds (an object's box)
  searched: null,    // the query of the results on screen (for the match view)
  busy: 0,
};
const MAX_K = 1000;

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

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

// One sentence a user can act on, from a failed call.
function explain(status, detail) {
  if (status === 401) {
    $("api-key-field").hidden = false;
    return "This service needs an API key: type it in the API key box at the top.";
  }
  if (status === 503) return "The service is busy; try again in a moment.";
  if (status === 413) return `Too large: ${detail}`;
  if (status >= 500) return "The service failed on this request (its log has the details); try another query.";
  const missing = /^no point with id '(.*)' in '(.*)'$/.exec(detail || "");
  if (missing) {
    return `No image with id "${missing[1]}" in ${missing[2]}: type the start of an id and pick a suggestion, or find one under Browse.`;
  }
  return detail || `the service answered ${status}`;
}

async function api(url, options = {}) {
  let answer;
  try {
    answer = await fetch(url, Object.assign({ credentials: "same-origin" }, options));
  } catch (error) {
    throw new ApiError("The service did not answer: is `ilias serve` still running?", 0);
  }
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok) throw new ApiError(explain(answer.status, body.detail), answer.status);
  return body;
}

function say(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

// A request in flight: spinner, disabled Search button, seconds counting in the status.
async function busy(what, work) {
  const began = performance.now();
  state.busy += 1;
  $("spinner").hidden = false;
  $("search-button").disabled = true;
  const tick = () => say(`${what}... ${((performance.now() - began) / 1000).toFixed(1)} s`);
  tick();
  const timer = setInterval(tick, 100);
  try {
    return await work();
  } finally {
    clearInterval(timer);
    state.busy -= 1;
    if (!state.busy) { $("spinner").hidden = true; $("search-button").disabled = false; }
  }
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
const pct = (x) => (x === null || x === undefined ? "-" : (100 * Number(x)).toFixed(1));
const base = () => `/api/collections/${encodeURIComponent(state.collection)}`;
const imageUrl = (id) => `${base()}/image?id=${encodeURIComponent(id)}`;
const thumbUrl = (id) => `${base()}/thumbnail?id=${encodeURIComponent(id)}`;

// An id as a caption that wraps at its separators (/, _, -, .), never mid-word.
function caption(id) {
  const span = el("span", { class: "id" });
  for (const part of id.split(/(?<=[/_.-])/)) { span.append(part); span.append(el("wbr")); }
  return span;
}

function roleBadge(payload) {
  const role = payload && payload.role;
  return role ? el("span", { class: `badge role-${role}`, text: role }) : null;
}

// ----------------------------------------------------------------- tabs
function showView(name) {
  for (const view of ["search", "browse", "explorer"]) {
    const selected = view === name;
    $(`tab-${view}`).setAttribute("aria-selected", String(selected));
    $(`view-${view}`).hidden = !selected;
  }
  if (name === "explorer") loadRuns();
  if (name === "browse") browse(0);
}
for (const view of ["search", "browse", "explorer"]) $(`tab-${view}`).addEventListener("click", () => showView(view));

// ----------------------------------------------------------------- collections
async function loadCollections() {
  try {
    const answer = await api("/api/collections");
    const select = $("collection");
    select.replaceChildren();
    state.collections = {};
    for (const c of answer.collections) {
      state.collections[c.name] = c;
      select.append(el("option", { value: c.name, text: `${c.name} (${c.points} images)`, title: c.encoder || "" }));
    }
    for (const alias of Object.keys(answer.aliases)) {
      state.collections[alias] = state.collections[answer.aliases[alias]];
      select.append(el("option", { value: alias, text: `${alias} (alias of ${answer.aliases[alias]})` }));
    }
    select.value = answer.default;
    if (!select.value && select.options.length) select.selectedIndex = 0;
    state.collection = select.value || null;
    if (!state.collection) { say(`no collections in ${answer.store}: load one with ilias load`, true); return; }
    say("");
    await loadCapabilities();
  } catch (error) {
    say(error.message, true);
  }
}

// What the collection can do: text search and local-descriptor re-rankers are hidden or
// disabled, with the reason, where they cannot work.
async function loadCapabilities() {
  const c = state.collections[state.collection];
  const info = $("collection-info");
  info.textContent = c ? `${c.points} images, encoder ${c.encoder || "not recorded"}` : "";
  clearResults();
  state.caps = null;
  try {
    const caps = await busy("loading the collection's encoder", () => api(`${base()}/capabilities`));
    state.caps = caps;
    $("text-field").hidden = !caps.text;
    if (!caps.text) $("text").value = "";
    for (const option of $("rerank").options) {
      const needsLocal = option.value === "cs" || option.value === "sp";
      option.disabled = needsLocal && !caps.local;
      option.title = option.disabled ? caps.local_reason : "";
    }
    if ($("rerank").selectedOptions[0]?.disabled) $("rerank").value = "";
    const notes = [];
    if (!caps.text) notes.push("no text search (the encoder reads images only)");
    if (!caps.local) notes.push("no cs/sp re-ranking or patch matches (no local descriptors)");
    info.textContent = `${c.points} images, encoder ${caps.encoder || "not recorded"}` + (notes.length ? `; ${notes.join("; ")}` : "");
    info.title = [caps.text_reason, caps.local_reason].filter(Boolean).join("\n");
    say("ready: drop an image, pick a stored id, or browse");
    suggestIds("");
  } catch (error) {
    say(error.message, true);
  }
}
$("collection").addEventListener("change", (e) => {
  state.collection = e.target.value;
  setQuery(null);
  $("stored-id").value = "";
  loadCapabilities();
});
$("api-key").addEventListener("change", async () => {
  const field = $("api-key");
  const key = field.value.trim();
  field.value = "";  // the cookie holds the session; the key stays nowhere in the page
  if (!key) return;
  try {
    await startSession(key);
    say("signed in");
    $("api-key-field").hidden = true;
    loadCollections();
  } catch (error) { say(error.message, true); }
});

// ----------------------------------------------------------------- stored ids
let suggestTimer = null;
async function suggestIds(prefix) {
  if (!state.collection) return;
  try {
    const page = await api(`${base()}/ids?prefix=${encodeURIComponent(prefix)}&limit=20`);
    if (prefix === "" && page.ids.length) $("stored-id").placeholder = `e.g. ${page.ids[0]}`;
    $("id-suggestions").replaceChildren(...page.ids.map((id) => el("option", { value: id })));
  } catch (error) { /* completion is a help, not a requirement */ }
}
$("stored-id").addEventListener("input", () => {
  const value = $("stored-id").value;
  if (value && state.query && state.query.kind === "file") setQuery(null);
  clearTimeout(suggestTimer);
  suggestTimer = setTimeout(() => suggestIds(value), 120);
});

// ----------------------------------------------------------------- the query image and its box
const drop = $("drop");
function setQuery(query, suggested = null) {
  state.query = query;
  state.box = null;
  state.suggested = suggested;
  const stage = $("query-stage");
  const image = $("query-image");
  if (image.src.startsWith("blob:")) URL.revokeObjectURL(image.src);
  if (!query) {
    stage.hidden = true;
    $("box-tools").hidden = true;
    image.removeAttribute("src");
    $("drop-text").textContent = "Drop an image here or choose a file";
    drawBox();
    return;
  }
  image.src = query.kind === "file" ? URL.createObjectURL(query.file) : imageUrl(query.id);
  stage.hidden = false;
  $("box-tools").hidden = false;
  $("box-suggest").hidden = !suggested;
  $("drop-text").textContent = query.kind === "file" ? `image: ${query.file.name}` : "Drop another image here or choose a file";
  drawBox();
}

function chooseFile(file) {
  if (!file) return;
  $("stored-id").value = "";
  setQuery({ kind: "file", file });
}
$("file").addEventListener("change", (e) => { chooseFile(e.target.files[0]); });
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file").click(); } });
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) { chooseFile(e.dataTransfer.files[0]); search(); }
});

// The box lives in image pixels; the overlay is placed by the image's displayed scale.
function scaleOf() {
  const image = $("query-image");
  return image.naturalWidth ? image.clientWidth / image.naturalWidth : 0;
}
function drawBox() {
  const box = $("box");
  const s = scaleOf();
  box.hidden = !state.box || !s;
  $("box-clear").hidden = !state.box;
  $("box-text").textContent = state.box
    ? `Region ${state.box.join(", ")} (x, y, w, h): drag it, or its corner, to change it`
    : "Drag on the image to search a region";
  if (box.hidden) return;
  const [x, y, w, h] = state.box;
  Object.assign(box.style, { left: `${x * s}px`, top: `${y * s}px`, width: `${w * s}px`, height: `${h * s}px` });
}
$("query-image").addEventListener("load", drawBox);
window.addEventListener("resize", drawBox);

function setBox(box) {
  const image = $("query-image");
  const W = image.naturalWidth, H = image.naturalHeight;
  if (!box) { state.box = null; drawBox(); return; }
  let [x, y, w, h] = box.map(Math.round);
  x = Math.max(0, Math.min(x, W - 1)); y = Math.max(0, Math.min(y, H - 1));
  w = Math.max(1, Math.min(w, W - x)); h = Math.max(1, Math.min(h, H - y));
  state.box = [x, y, w, h];
  drawBox();
}

// Pointer gestures: drag on the image draws a box, drag the box moves it, drag its corner
// resizes it; letting go searches the region (as soon as there are results to replace).
(function boxGestures() {
  const stage = $("query-stage");
  let gesture = null;
  const point = (e) => {
    const rect = $("query-image").getBoundingClientRect();
    const s = scaleOf();
    return [(e.clientX - rect.left) / s, (e.clientY - rect.top) / s];
  };
  stage.addEventListener("pointerdown", (e) => {
    if (!scaleOf()) return;
    e.preventDefault();
    stage.setPointerCapture(e.pointerId);
    const [px, py] = point(e);
    const mode = e.target.classList.contains("handle") ? "resize" : e.target.id === "box" ? "move" : "draw";
    gesture = { mode, start: [px, py], box: state.box ? [...state.box] : null, moved: false };
  });
  stage.addEventListener("pointermove", (e) => {
    if (!gesture) return;
    const [px, py] = point(e);
    const [sx, sy] = gesture.start;
    const dx = px - sx, dy = py - sy;
    if (Math.abs(dx) + Math.abs(dy) < 3 / (scaleOf() || 1) && !gesture.moved) return;
    gesture.moved = true;
    if (gesture.mode === "draw") {
      setBox([Math.min(sx, px), Math.min(sy, py), Math.abs(dx), Math.abs(dy)]);
    } else if (gesture.mode === "move") {
      const [x, y, w, h] = gesture.box;
      const image = $("query-image");
      setBox([Math.max(0, Math.min(x + dx, image.naturalWidth - w)), Math.max(0, Math.min(y + dy, image.naturalHeight - h)), w, h]);
    } else {
      const [x, y, w, h] = gesture.box;
      setBox([x, y, Math.max(4, w + dx), Math.max(4, h + dy)]);
    }
  });
  const finish = () => {
    if (!gesture) return;
    const moved = gesture.moved;
    gesture = null;
    if (moved && state.box && (state.box[2] < 4 || state.box[3] < 4)) setBox(null);
    if (moved && state.searched) search();
  };
  stage.addEventListener("pointerup", finish);
  stage.addEventListener("pointercancel", finish);
})();
$("box-clear").addEventListener("click", () => { setBox(null); if (state.searched) search(); });
$("box-suggest").addEventListener("click", () => { setBox(state.suggested); if (state.searched) search(); });

// ----------------------------------------------------------------- search
$("search-form").addEventListener("submit", (e) => { e.preventDefault(); search(); });

function searchRequest() {
  const kText = $("k").value.trim();
  const k = Number(kText || 20);
  if (!Number.isInteger(k) || k < 1 || k > MAX_K) {
    throw new ApiError(`k is ${kText || "empty"}: give a whole number from 1 to ${MAX_K} (the number of results to show).`, 0);
  }
  const request = { k };
  const where = $("where").value.split(/[;\n]/).map((s) => s.trim()).filter(Boolean);
  if (where.length) request.where = where;
  const text = $("text-field").hidden ? "" : $("text").value.trim();
  if (text) request.text = text;
  if ($("rerank").value) request.rerank = [$("rerank").value];
  return request;
}

function clearResults() {
  state.generation = (state.generation || 0) + 1;  // late callbacks of older results stop
  $("results").replaceChildren();
  $("query-view").replaceChildren();
  $("timings").textContent = "";
  state.searched = null;
}

async function search() {
  if (!state.collection) { say("choose a collection first", true); return; }
  const clicked = performance.now();
  clearResults();  // nothing on screen may pass for the answer to this search
  let request;
  try {
    request = searchRequest();
  } catch (error) { say(error.message, true); return; }
  const id = $("stored-id").value.trim();
  if (id && !(state.query && state.query.kind === "id" && state.query.id === id)) {
    setQuery({ kind: "id", id });  // the payload's box, if any, comes with the results
  }
  const query = state.query;
  if (!query && !request.text) {
    say("Give a query: drop or choose an image, type a stored id, or type a text.", true);
    return;
  }
  if (query && query.kind === "id") request.id = query.id;
  if (query && state.box) request.bbox = state.box;
  try {
    const answer = await busy("searching", () => {
      if (query && query.kind === "file") {
        const form = new FormData();
        form.append("image", query.file);
        form.append("query", JSON.stringify(request));
        return api(`${base()}/search/image`, { method: "POST", body: form });
      }
      return api(`${base()}/search`, {
        method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request),
      });
    });
    state.searched = { query, box: state.box, request };
    showQuery(query, request);
    showResults(answer, clicked);
    say(`${answer.hits.length} results for ${answer.query}`);
    if (query && query.kind === "id" && !state.suggested) offerStoredBox(query.id, answer);
  } catch (error) {
    if (query && query.kind === "id" && error.status === 404) setQuery(null);
    say(error.message, true);
  }
}

// A stored query whose payload holds an object's box (an ILIAS positive, a query point)
// offers it as the starting region.
function offerStoredBox(id, answer) {
  const self = answer.hits.find((h) => h.id === id);
  const box = self && self.payload && self.payload.bbox;
  if (Array.isArray(box) && box.length === 4) {
    state.suggested = box;
    $("box-suggest").hidden = false;
  }
}

function showQuery(query, request) {
  const parts = [];
  if (query && query.kind === "file") parts.push(`uploaded ${query.file.name}`);
  if (query && query.kind === "id") parts.push(`stored ${query.id}`);
  if (request.bbox) parts.push(`region ${request.bbox.join(", ")}`);
  if (request.text) parts.push(`text "${request.text}"`);
  if (request.rerank) parts.push(`re-ranked by ${request.rerank.join(", ")}`);
  $("query-view").replaceChildren(el("div", { id: "query-label", text: `Query: ${parts.join(" + ")}` }));
}

function showResults(answer, clicked) {
  const timings = Object.entries(answer.timings_ms).map(([k, v]) => `${k} ${v.toFixed(1)} ms`);
  $("timings").textContent = timings.join(" | ");
  const grid = $("results");
  const cards = answer.hits.map((hit) => resultCard(hit));
  grid.replaceChildren(...cards);
  const first = grid.querySelector("img");
  const generation = state.generation;
  if (first && clicked !== undefined) {
    const painted = () => requestAnimationFrame(() => {
      if (generation !== state.generation) return;
      const ms = performance.now() - clicked;
      state.firstPaintMs = ms;
      $("timings").textContent += ` | first result shown ${ms.toFixed(0)} ms after Search`;
    });
    if (first.complete && first.naturalWidth) painted();
    else first.addEventListener("load", painted, { once: true });
  }
}

function resultCard(hit) {
  const open = el("button", {
    type: "button", class: "card open",
    "aria-label": `rank ${hit.rank}, ${hit.id}, score ${fmt(hit.score)}: see why it matched`,
    "data-id": hit.id, title: `${hit.id}\nscore ${fmt(hit.score, 4)}\nclick: why it matched`,
    onclick: () => openMatch(hit.id, hit.payload),
  },
    el("img", { src: hit.thumbnail, alt: hit.id, loading: hit.rank <= 12 ? "eager" : "lazy" }),
    el("div", { class: "meta" },
      el("div", { class: "line" },
        el("span", { class: "rank", text: `#${hit.rank}` }),
        el("span", { class: "score", text: fmt(hit.score) })),
      roleBadge(hit.payload), " ", caption(hit.id)));
  const again = el("button", {
    type: "button", class: "again", text: "search with it",
    "aria-label": `search with ${hit.id}`, onclick: () => searchStored(hit.id),
  });
  return el("li", {}, open, again);
}

function searchStored(id) {
  showView("search");
  $("stored-id").value = id;
  $("text").value = "";
  setQuery({ kind: "id", id });
  if ($("match").open) $("match").close();
  search();
}

// ----------------------------------------------------------------- why it matched
// Query and result side by side; the matched patches as lines, RANSAC inliers in green
// with their count (the sp re-ranker's own computation, from /match), payload boxes drawn.
async function openMatch(id, payload, query = state.searched && state.searched.query, box = state.searched && state.searched.box) {
  const dialog = $("match");
  $("match-summary").textContent = "finding the matched patches...";
  $("match-caption").replaceChildren(caption(id), " ", roleBadge(payload) || "");
  $("match-query").replaceChildren();
  $("match-result").replaceChildren();
  $("match-lines").replaceChildren();
  $("match-search").onclick = () => searchStored(id);
  if (!dialog.open) dialog.showModal();
  const queryImg = query ? el("img", { alt: "query", src: query.kind === "file" ? URL.createObjectURL(query.file) : imageUrl(query.id) }) : null;
  const resultImg = el("img", { alt: id, src: imageUrl(id) });
  if (queryImg) $("match-query").append(queryImg);
  else $("match-query").append(el("p", { text: "a text query: no image to compare" }));
  $("match-result").append(resultImg);
  let match = null;
  try {
    if (query) {
      const body = { id };
      if (box) body.bbox = box;
      if (query.kind === "file") {
        const form = new FormData();
        form.append("image", query.file);
        form.append("query", JSON.stringify(body));
        match = await api(`${base()}/match/image`, { method: "POST", body: form });
      } else {
        body.query_id = query.id;
        match = await api(`${base()}/match`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      }
    }
  } catch (error) {
    $("match-summary").textContent = error.message;
    return;
  }
  const summary = !match ? "" : match.local
    ? `${match.inliers} inliers of ${match.tentative} matched patches (spatial verification, as the sp re-ranker counts them)`
    : match.reason;
  $("match-summary").replaceChildren(el("span", { id: "match-inliers", "data-inliers": match && match.local ? match.inliers : "", text: summary }));
  const draw = () => drawMatch(match, queryImg, resultImg, box, payload);
  for (const img of [queryImg, resultImg]) if (img && !img.complete) img.addEventListener("load", draw);
  draw();
  window.onresize = draw;
}

function drawMatch(match, queryImg, resultImg, box, payload) {
  const svg = $("match-lines");
  svg.replaceChildren();
  const area = $("match-pair").getBoundingClientRect();
  svg.setAttribute("width", area.width);
  svg.setAttribute("height", area.height);
  const ns = "http://www.w3.org/2000/svg";
  const add = (tag, attrs) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    svg.append(node);
    return node;
  };
  const frame = (img) => {
    if (!img || !img.naturalWidth) return null;
    const r = img.getBoundingClientRect();
    return { x: r.left - area.left, y: r.top - area.top, s: r.width / img.naturalWidth };
  };
  const q = frame(queryImg), r = frame(resultImg);
  const rect = (f, [x, y, w, h], cls) => f && add("rect", { x: f.x + x * f.s, y: f.y + y * f.s, width: w * f.s, height: h * f.s, class: cls });
  if (q && box) rect(q, box, "region");
  const boxes = (match && match.boxes) || [];
  if (r) for (const b of boxes) rect(r, b, "gt");
  if (!q || !r || !match || !match.local) return;
  const sorted = [...match.matches].sort((a, b) => a.inlier - b.inlier);  // inliers on top
  for (const m of sorted) {
    add("line", {
      x1: q.x + m.query[0] * q.s, y1: q.y + m.query[1] * q.s,
      x2: r.x + m.result[0] * r.s, y2: r.y + m.result[1] * r.s,
      class: m.inlier ? "inlier" : "outlier",
    });
  }
}
$("match-close").addEventListener("click", () => $("match").close());

// ----------------------------------------------------------------- browse
const browsing = { offset: 0, limit: 24 };
async function browse(offset) {
  if (!state.collection) return;
  const prefix = $("browse-prefix").value;
  try {
    const role = $("browse-role").value;
    const page = await api(`${base()}/ids?prefix=${encodeURIComponent(prefix)}&role=${encodeURIComponent(role)}&offset=${offset}&limit=${browsing.limit}`);
    if ($("browse-role").options.length !== page.roles.length + 1) {
      $("browse-role").replaceChildren(el("option", { value: "", text: "any" }), ...page.roles.map((r) => el("option", { value: r, text: r })));
      $("browse-role").value = role;
    }
    browsing.offset = offset;
    $("browse-count").textContent = page.total
      ? `${offset + 1}-${offset + page.ids.length} of ${page.total}`
      : "no stored id starts with that";
    $("browse-prev").disabled = offset === 0;
    $("browse-next").disabled = offset + page.ids.length >= page.total;
    $("browse").replaceChildren(...page.ids.map((id, i) => el("li", {}, el("button", {
      type: "button", class: "card open", "data-id": id, "aria-label": `search with ${id}`,
      title: `${id}\nclick: search with it`, onclick: () => searchStored(id),
    }, el("img", { src: page.thumbnails[i], alt: id, loading: "lazy" }), el("div", { class: "meta" }, caption(id))))));
    const groups = new Set(page.ids.map((id) => id.slice(0, id.indexOf("/", prefix.length) + 1)).filter(Boolean));
    $("browse-groups").replaceChildren(...[...groups].map((g) => el("option", { value: g })));
  } catch (error) { say(error.message, true); }
}
let browseTimer = null;
$("browse-prefix").addEventListener("input", () => { clearTimeout(browseTimer); browseTimer = setTimeout(() => browse(0), 150); });
$("browse-role").addEventListener("change", () => browse(0));
$("browse-prev").addEventListener("click", () => browse(Math.max(0, browsing.offset - browsing.limit)));
$("browse-next").addEventListener("click", () => browse(browsing.offset + browsing.limit));
$("browse-form").addEventListener("submit", (e) => e.preventDefault());

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
    const label = `${run.name} (mAP ${fmt(run.map, 1)})`;
    a.append(el("option", { value: run.name, text: label }));
    b.append(el("option", { value: run.name, text: label }));
  }
  if (!state.runs.length) { say("no evaluation runs: start the service with --runs DIR"); return; }
  showRun();
}
$("run-a").addEventListener("change", showRun);
$("run-b").addEventListener("change", showComparison);
$("run-k").addEventListener("change", () => { if (state.runQuery) showQueryDetail(state.runQuery); });
$("runs-form").addEventListener("submit", (e) => e.preventDefault());

const runQueryImage = (run, id) => `/api/runs/${encodeURIComponent(run)}/query-image?id=${encodeURIComponent(id)}`;

async function showRun() {
  const run = $("run-a").value;
  if (!run) return;
  try {
    const detail = await api(`/api/runs/${encodeURIComponent(run)}`);
    $("run-title").textContent = `${run}: ${detail.queries.length} queries, mAP@${detail.run.k} ${fmt(detail.run.map, 1)}`;
    const list = $("query-list");
    list.replaceChildren();
    for (const q of detail.queries) {
      list.append(el("li", {}, el("button", {
        type: "button", "data-query": q.query_id, onclick: () => showQueryDetail(q.query_id),
      }, el("img", { src: runQueryImage(run, q.query_id), alt: "", loading: "lazy" }),
      el("span", { class: "qid" }, caption(q.query_id)), el("span", { class: "ap", text: pct(q.ap) }))));
    }
    say(`run ${run}: queries sorted by AP (0-100), lowest first`);
    if (detail.queries.length) showQueryDetail(detail.queries[0].query_id);
    showComparison();
  } catch (error) { say(error.message, true); }
}

async function showQueryDetail(queryId) {
  const run = $("run-a").value;
  state.runQuery = queryId;
  for (const button of document.querySelectorAll("#query-list button")) {
    button.setAttribute("aria-current", String(button.dataset.query === queryId));
  }
  const k = Number($("run-k").value) || 20;
  try {
    const q = await api(`/api/runs/${encodeURIComponent(run)}/query?id=${encodeURIComponent(queryId)}&k=${k}`);
    const box = $("query-detail");
    // The run's query image, fetched once as a file so that the match view can send it.
    const queryFile = fetch(q.image, { credentials: "same-origin" }).then((r) => r.blob())
      .then((blob) => ({ kind: "file", file: new File([blob], q.query_id.split("/").pop(), { type: blob.type }) }));
    const open = async (id, payload) => openMatch(id, payload, await queryFile, null);
    box.replaceChildren(
      el("div", { class: "query-head" },
        el("img", { src: q.image, alt: `query ${q.query_id}` }),
        el("div", {},
          el("h2", { text: q.query_id }),
          el("div", { text: `AP ${pct(q.ap)} (0-100) - ${q.n_positives} positives` }),
          el("button", { type: "button", id: "search-query", text: "Search with this query (its box)", onclick: () => searchRunQuery(run, q.query_id, queryFile) }),
          el("div", { class: "legend" }, el("span", { class: "pos", text: "positive" }), el("span", { class: "neg", text: "distractor" })))),
      el("h2", { text: `Top ${q.hits.length}` }));
    const grid = el("ol", { class: "grid", id: "ranked", "aria-label": "Ranked results" });
    for (const hit of q.hits) {
      grid.append(el("li", {}, el("button", {
        type: "button", class: `card ${hit.positive ? "positive" : "distractor"}`, "data-id": hit.id,
        title: `${hit.id}\nscore ${fmt(hit.score, 4)}\nclick: why it matched`,
        onclick: () => open(hit.id, { role: hit.positive ? "positive" : "distractor" }),
      },
        el("img", { src: hit.thumbnail, alt: hit.id, loading: "lazy" }),
        el("div", { class: "meta" },
          el("div", { class: "line" }, el("span", { class: "rank", text: `#${hit.rank}` }),
            el("span", { class: "score", text: fmt(hit.score) })),
          el("span", { class: `badge role-${hit.positive ? "positive" : "distractor"}`, text: hit.positive ? "positive" : "distractor" }),
          " ", caption(hit.id)))));
    }
    box.append(grid);
    box.append(el("h2", { text: q.missed.length ? `Missed positives (${q.missed.length})` : "No positive missed" }));
    const missed = el("ol", { class: "grid", id: "missed", "aria-label": "Missed positives" });
    for (const m of q.missed) {
      missed.append(el("li", {}, el("button", {
        type: "button", class: "card positive", "data-id": m.id, title: `${m.id}\nclick: why it matched`,
        onclick: () => open(m.id, { role: "positive" }),
      },
        el("img", { src: m.thumbnail, alt: m.id, loading: "lazy" }),
        el("div", { class: "meta" }, el("div", { class: "line", text: m.rank ? `rank ${m.rank}` : "not in the ranking" }), caption(m.id)))));
    }
    box.append(missed);
  } catch (error) { say(error.message, true); }
}

// An evaluation query in the search view: its image as an upload, its ground-truth box
// (ILIAS queries have one) as the starting region, searched at once.
async function searchRunQuery(run, queryId, queryFile) {
  try {
    const [query, answer] = await Promise.all([queryFile, api(`/api/runs/${encodeURIComponent(run)}/query-box?id=${encodeURIComponent(queryId)}`)]);
    showView("search");
    $("stored-id").value = "";
    setQuery(query, answer.bbox);
    const image = $("query-image");
    const start = () => { if (answer.bbox) setBox(answer.bbox); search(); };
    if (image.complete && image.naturalWidth) start();
    else image.addEventListener("load", start, { once: true });
  } catch (error) { say(error.message, true); }
}

async function showComparison() {
  const a = $("run-a").value, b = $("run-b").value;
  const out = $("comparison");
  const asked = (state.comparing = (state.comparing || 0) + 1);  // only the latest one shows
  out.replaceChildren();
  if (!a || !b) return;
  try {
    const c = await api(`/api/runs/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`);
    if (asked === state.comparing) out.replaceChildren(scatter(c), differences(c));
  } catch (error) { say(error.message, true); }
}

function scatter(c) {
  const size = 300, pad = 40, span = size - pad - 12;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${size} ${size}`);
  svg.setAttribute("width", size);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `per-query AP (0-100), ${c.a.name} against ${c.b.name}; click a point to see its query`);
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  const X = (ap) => pad + ap * span, Y = (ap) => 12 + (1 - ap) * span;
  add("rect", { x: pad, y: 12, width: span, height: span, fill: "none", stroke: "#d5dae0" });
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    add("line", { x1: X(t), y1: Y(0), x2: X(t), y2: Y(0) + 4, stroke: "#5d6670", class: "tick" });
    add("text", { x: X(t), y: Y(0) + 15, "text-anchor": "middle", "font-size": 10 }, String(100 * t));
    add("line", { x1: X(0) - 4, y1: Y(t), x2: X(0), y2: Y(t), stroke: "#5d6670", class: "tick" });
    add("text", { x: X(0) - 6, y: Y(t) + 3, "text-anchor": "end", "font-size": 10 }, String(100 * t));
  }
  add("line", { x1: X(0), y1: Y(0), x2: X(1), y2: Y(1), stroke: "#aab", "stroke-dasharray": "4 3" });
  add("text", { x: pad + span / 2, y: size - 4, "text-anchor": "middle", "font-size": 12 }, `AP ${c.a.name}`);
  add("text", { x: 10, y: 12 + span / 2, "text-anchor": "middle", "font-size": 12, transform: `rotate(-90 10 ${12 + span / 2})` }, `AP ${c.b.name}`);
  for (const q of c.queries) {
    const dot = add("circle", {
      cx: X(q.ap_a), cy: Y(q.ap_b), r: 6, tabindex: 0, role: "button", "data-query": q.query_id,
      fill: q.delta > 0 ? "#1a9e3a" : q.delta < 0 ? "#d0342c" : "#5d6670", "fill-opacity": 0.75,
    });
    dot.addEventListener("click", () => showQueryDetail(q.query_id));
    dot.addEventListener("keydown", (e) => { if (e.key === "Enter") showQueryDetail(q.query_id); });
    const title = document.createElementNS(ns, "title");
    title.textContent = `${q.query_id}: ${pct(q.ap_a)} -> ${pct(q.ap_b)}`;
    dot.append(title);
  }
  return svg;
}

function differences(c) {
  const table = el("table", { "aria-label": "Queries where the runs differ most" },
    el("caption", { text: `Largest differences in AP (0-100), ${c.b.name} - ${c.a.name}` }),
    el("tr", {}, el("th", { text: "query" }), el("th", { text: c.a.name }), el("th", { text: c.b.name }), el("th", { text: "B - A" })));
  for (const q of c.queries.slice(0, 15)) {
    table.append(el("tr", {},
      el("td", {}, el("button", { type: "button", onclick: () => showQueryDetail(q.query_id) }, caption(q.query_id))),
      el("td", { class: "num", text: pct(q.ap_a) }), el("td", { class: "num", text: pct(q.ap_b) }),
      el("td", { class: "num", text: (q.delta > 0 ? "+" : "") + pct(q.delta) })));
  }
  return el("div", { class: "table-wrap" }, table);
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
