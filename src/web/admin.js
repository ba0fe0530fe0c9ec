// Spool admin page: sign in with the admin token, totals, the session list with filters and paging
// (live while sessions are recording), and one session in detail with playback, finalize and delete.
//
// Everything the server returns (ids, metadata, user agents, failure reasons) is text a recorder or
// client chose: it is only ever shown through textContent / text nodes, never parsed as HTML.
// `window.spoolAdmin` exposes the state to automated tests.

const TOKEN_KEY = "spool-admin-token";
const POLL_MS = 2000;
const LIVE_STATES = new Set(["recording", "finishing"]);
const REFUSED = "That token was refused. Check it and sign in again.";
const STATE_LABELS = {
  recording: "Recording",
  finishing: "Finishing",
  ready: "Ready",
  failed: "Failed",
};

const $ = (id) => document.getElementById(id);
const el = {
  signOut: $("sign-out"),
  login: $("login"),
  loginForm: $("login-form"),
  loginMessage: $("login-message"),
  token: $("token"),
  signIn: $("sign-in"),
  console: $("console"),
  message: $("message"),
  live: $("live"),
  stats: $("stats"),
  filterBox: $("filter-box"),
  filterCount: $("filter-count"),
  filters: $("filters"),
  state: $("filter-state"),
  complete: $("filter-complete"),
  since: $("filter-since"),
  until: $("filter-until"),
  metaKey: $("filter-meta-key"),
  metaValue: $("filter-meta-value"),
  limit: $("filter-limit"),
  apply: $("apply"),
  clear: $("clear"),
  count: $("count"),
  updated: $("updated"),
  sessions: $("sessions"),
  empty: $("empty"),
  prev: $("prev"),
  next: $("next"),
  page: $("page"),
  detail: $("detail"),
  closeDetail: $("close-detail"),
  detailId: $("detail-id"),
  detailMessage: $("detail-message"),
  detailState: $("detail-state"),
  detailLive: $("detail-live"),
  detailFields: $("detail-fields"),
  recording: $("recording"),
  player: $("player"),
  recordingInfo: $("recording-info"),
  download: $("download"),
  recordingFactsSection: $("recording-facts-section"),
  recordingFields: $("recording-fields"),
  metadata: $("detail-metadata"),
  actions: $("actions"),
  finalize: $("finalize"),
  delete: $("delete"),
  confirmBox: $("confirm-box"),
  confirmText: $("confirm-text"),
  confirm: $("confirm"),
  cancel: $("cancel"),
};

let requests = 0;
let pollTimer = null;
let listGeneration = 0;
let detailGeneration = 0;
let messageTimer = null;
/** The session a finalize was asked for, until the detail shows it done. */
let finalizing = null;

/** For automated tests (and curious people): what the page last saw and is doing. */
const admin = {
  /** The last `GET /v1/admin/sessions` answer shown. */
  lastList: null,
  /** The last `GET /v1/admin/stats` answer shown. */
  lastStats: null,
  /** The last `GET /v1/admin/sessions/{id}` answer shown. */
  lastDetail: null,
  /** The last error message shown, if any. */
  lastError: null,
  /** The last finalize/delete: `{kind, id, ok, error?}`. */
  lastAction: null,
  /** The filters in use (as sent), the current page's cursor and the previous pages' cursors. */
  filters: {},
  cursor: null,
  cursors: [],
  /** The session shown in the detail view, if open. */
  detailId: null,
  /** "finalize" or "delete" while the confirmation step is showing. */
  pending: null,
  /** Requests in flight. */
  get busy() {
    return requests > 0;
  },
  /** A refresh is scheduled (something on the page is recording or finishing). */
  get polling() {
    return pollTimer !== null;
  },
  get signedIn() {
    return getToken() !== null;
  },
  refresh: () => refresh(),
  open: (id) => openDetail(id),
};
window.spoolAdmin = admin;

// ---- token ----------------------------------------------------------------------------------------

let memoryToken = null; // when sessionStorage is unavailable (some private modes)

function getToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return memoryToken;
  }
}

function setToken(token) {
  memoryToken = token;
  try {
    sessionStorage.setItem(TOKEN_KEY, token);
  } catch {
    // kept in memory only
  }
}

function clearToken() {
  memoryToken = null;
  try {
    sessionStorage.removeItem(TOKEN_KEY);
  } catch {
    // nothing stored
  }
}

// ---- API ------------------------------------------------------------------------------------------

class Unauthorized extends Error {
  constructor() {
    super(REFUSED);
  }
}

/** Calls the API with the admin token; resolves with the JSON body (null for 204). */
async function api(method, path) {
  const token = getToken();
  if (!token) throw new Unauthorized();
  requests += 1;
  try {
    let response;
    try {
      response = await fetch(path, {
        method,
        headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
        cache: "no-store",
      });
    } catch {
      const err = new Error("Could not reach the Spool server. Check the connection and try again.");
      err.network = true;
      throw err;
    }
    if (response.status === 401) throw new Unauthorized();
    if (response.status === 204) return null;
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (!response.ok) {
      const message = typeof body?.error?.message === "string"
        ? body.error.message
        : `The server answered ${response.status} ${response.statusText}`.trim();
      const err = new Error(message);
      err.status = response.status;
      err.code = body?.error?.code;
      throw err;
    }
    return body;
  } finally {
    requests -= 1;
  }
}

const sessionPath = (id) => `/v1/admin/sessions/${encodeURIComponent(id)}`;

// ---- formatting -----------------------------------------------------------------------------------

function formatBytes(n) {
  if (n == null || !Number.isFinite(n)) return "–";
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

/** "31.3 KB (32,044 bytes)", or just "21 B". */
function formatBytesExact(n) {
  return n != null && n >= 1024 ? `${formatBytes(n)} (${formatCount(n)} bytes)` : formatBytes(n);
}

function formatCount(n) {
  return n == null || !Number.isFinite(n) ? "–" : n.toLocaleString();
}

function formatDuration(ms) {
  if (ms == null || !Number.isFinite(ms)) return "unknown length";
  const s = Math.round(ms / 1000);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

function formatTime(iso, long = false) {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return "–";
  return long
    ? date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" })
    : date.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

/** "5 s ago", "3 min ago", … */
function ago(iso) {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return "–";
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 1) return "just now";
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ago`;
  return `${Math.floor(h / 24)} d ago`;
}

function shortId(id) {
  const text = String(id);
  return text.length > 10 ? `${text.slice(0, 8)}…` : text;
}

function isLive(session) {
  return LIVE_STATES.has(session?.state);
}

/** `[[2, 3], [6, 6]]` → "2–3, 6" with the number of chunks. */
function describeRanges(ranges) {
  if (!Array.isArray(ranges) || ranges.length === 0) return { text: "none", count: 0 };
  let count = 0;
  const parts = ranges.map((range) => {
    const [from, to] = Array.isArray(range) ? range : [range, range];
    count += Number(to) - Number(from) + 1;
    return from === to ? String(from) : `${from}–${to}`;
  });
  return { text: parts.join(", "), count };
}

function metadataSummary(metadata) {
  if (metadata == null || typeof metadata !== "object") return metadata == null ? "" : String(metadata);
  return Object.entries(metadata)
    .map(([key, value]) => `${key}=${typeof value === "string" ? value : JSON.stringify(value)}`)
    .join(" · ");
}

function extensionFor(mime = "") {
  if (mime.includes("webm")) return "webm";
  if (mime.includes("ogg")) return "ogg";
  if (mime.includes("mp4") || mime.includes("aac")) return "m4a";
  if (mime.includes("wav") || mime.includes("wave")) return "wav";
  if (mime.includes("mpeg")) return "mp3";
  return "bin";
}

/** The recording's URL with the admin token: `<audio src>` and downloads cannot send headers. */
function recordingUrl(recording, id) {
  let url = String(recording.url);
  try {
    // Only ever a web address (never, say, a javascript: one in a link).
    if (!["http:", "https:"].includes(new URL(url, location.href).protocol)) throw new Error(url);
  } catch {
    url = `${location.origin}/v1/sessions/${encodeURIComponent(id)}/recording`;
  }
  return `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(getToken() ?? "")}`;
}

// ---- DOM helpers ----------------------------------------------------------------------------------

/** `h("td", {class: "x", title: "…"}, child, "text", …)`: strings become text nodes, never HTML. */
function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child != null && child !== false) node.append(child);
  }
  return node;
}

function badge(state) {
  return h("span", { class: `badge badge-${LIVE_STATES.has(state) || state in STATE_LABELS ? state : "other"}` },
    STATE_LABELS[state] ?? String(state));
}

function agoNode(iso) {
  return h("time", { datetime: iso, title: formatTime(iso, true), dataset: { ago: iso } }, ago(iso));
}

/** The "Complete" cell: only a ready session's recording knows. */
function completeNode(session) {
  const recording = session.recording;
  if (recording) {
    if (recording.complete) return h("span", { class: "ok" }, "✓ Complete");
    const { count } = describeRanges(recording.missing);
    return h("span", { class: "warn" }, count > 0 ? `Incomplete (${count} missing)` : "Incomplete");
  }
  if (session.state === "failed") return h("span", { class: "err" }, "No recording");
  return h("span", { class: "muted" }, "Not yet");
}

function chunksText(session) {
  const received = formatCount(session.chunks_received);
  return session.expected_chunks == null ? received : `${received} / ${formatCount(session.expected_chunks)}`;
}

// ---- messages -------------------------------------------------------------------------------------

let messageSource = null;

function showMessage(text, kind = "error", source = "list") {
  clearTimeout(messageTimer);
  el.message.textContent = text;
  el.message.className = `message message-${kind}`;
  el.message.hidden = false;
  messageSource = source;
  if (kind === "error") admin.lastError = text;
  if (kind === "info") messageTimer = setTimeout(() => clearMessage("info"), 8000);
}

/** Hides the message if it came from `source` (or any, without one). */
function clearMessage(source) {
  if (source && messageSource !== source) return;
  clearTimeout(messageTimer);
  el.message.hidden = true;
  el.message.textContent = "";
  messageSource = null;
}

function showDetailMessage(text, kind = "error") {
  el.detailMessage.textContent = text;
  el.detailMessage.className = `message message-${kind}`;
  el.detailMessage.hidden = false;
  if (kind === "error") admin.lastError = text;
}

function clearDetailMessage() {
  el.detailMessage.hidden = true;
  el.detailMessage.textContent = "";
}

function handleError(err, where) {
  if (err instanceof Unauthorized) {
    signOut(REFUSED);
    return;
  }
  if (where === "detail" && el.detail.open) showDetailMessage(err.message);
  else showMessage(err.message, "error", "list");
}

// ---- signing in and out ---------------------------------------------------------------------------

function showLogin(message) {
  el.console.hidden = true;
  el.signOut.hidden = true;
  el.login.hidden = false;
  el.loginMessage.textContent = message ?? "";
  el.loginMessage.hidden = !message;
  el.token.focus();
}

function showConsole() {
  el.login.hidden = true;
  el.loginMessage.hidden = true;
  el.console.hidden = false;
  el.signOut.hidden = false;
}

async function signIn(event) {
  event.preventDefault();
  const token = el.token.value.trim();
  if (!token) {
    showLogin("Enter the admin token.");
    return;
  }
  if (/[^\x21-\x7e]/.test(token)) {
    // Not a token this server makes, and not sendable in a header.
    showLogin(REFUSED);
    return;
  }
  setToken(token);
  el.signIn.disabled = true;
  try {
    renderStats(await api("GET", "/v1/admin/stats"));
    el.token.value = "";
    showConsole();
    admin.cursor = null;
    admin.cursors = [];
    admin.filters = readFilters().filters ?? {};
    await refresh();
  } catch (err) {
    clearToken();
    showLogin(err instanceof Unauthorized ? REFUSED : err.message);
  } finally {
    el.signIn.disabled = false;
  }
}

function signOut(message) {
  clearToken();
  stopPolling();
  listGeneration += 1; // answers still on their way are dropped
  detailGeneration += 1;
  if (el.detail.open) el.detail.close();
  admin.lastList = null;
  admin.lastStats = null;
  admin.lastDetail = null;
  el.sessions.replaceChildren();
  clearMessage();
  showLogin(typeof message === "string" ? message : null);
}

// ---- stats ----------------------------------------------------------------------------------------

function renderStats(stats) {
  admin.lastStats = stats;
  for (const dd of el.stats.querySelectorAll("[data-stat]")) {
    const key = dd.dataset.stat;
    let text;
    if (key in (stats.sessions ?? {})) text = formatCount(stats.sessions[key]);
    else if (key.endsWith("bytes") || key.endsWith("bytes_stored")) text = formatBytes(stats[key]);
    else if (key === "chunks_per_second_1m") text = Number.isFinite(stats[key]) ? stats[key].toFixed(1) : "–";
    else text = formatCount(stats[key]);
    dd.textContent = text;
    if (key.includes("bytes") && Number.isFinite(stats[key])) dd.title = `${stats[key].toLocaleString()} bytes`;
  }
}

// ---- the list -------------------------------------------------------------------------------------

/** The filter controls as query parameters, or an error to show. */
function readFilters() {
  const filters = {};
  if (el.state.value) filters.state = el.state.value;
  if (el.complete.value) filters.complete = el.complete.value;
  for (const [input, name, label] of [[el.since, "since", "Created since"], [el.until, "until", "Created until"]]) {
    if (!input.value) continue;
    const date = new Date(input.value); // datetime-local: local time
    if (Number.isNaN(date.getTime())) return { error: `${label} is not a valid date and time.` };
    filters[name] = date.toISOString();
  }
  const key = el.metaKey.value.trim();
  const value = el.metaValue.value;
  if (key) {
    if (!/^[A-Za-z0-9_.-]{1,64}$/.test(key)) {
      return { error: "A metadata key is 1 to 64 letters, digits, '_', '-' or '.'." };
    }
    filters[`meta.${key}`] = value;
  } else if (value) {
    return { error: "Enter the metadata key that value belongs to." };
  }
  const limit = el.limit.value.trim();
  if (limit) {
    const n = Number(limit);
    if (!Number.isInteger(n) || n < 1 || n > 500) return { error: "Per page is a whole number from 1 to 500." };
    filters.limit = String(n);
  }
  return { filters };
}

function listQuery() {
  const params = new URLSearchParams(admin.filters);
  if (admin.cursor) params.set("cursor", admin.cursor);
  const query = params.toString();
  return query ? `/v1/admin/sessions?${query}` : "/v1/admin/sessions";
}

/** Reloads the stats and the current page of the list (same filters, same cursor). */
async function refresh() {
  if (!getToken()) return;
  const generation = ++listGeneration;
  let retry = true;
  try {
    const [stats, list] = await Promise.all([api("GET", "/v1/admin/stats"), api("GET", listQuery())]);
    if (generation !== listGeneration) return;
    renderStats(stats);
    renderList(list);
    clearMessage("list");
  } catch (err) {
    if (generation !== listGeneration) return;
    // A refused filter stays refused: wait for the person to change it.
    retry = !(err.status >= 400 && err.status < 500);
    handleError(err, "list");
    renderPager();
  } finally {
    if (generation === listGeneration && getToken()) schedulePoll(retry);
  }
}

function renderList(list) {
  admin.lastList = list;
  const sessions = Array.isArray(list?.sessions) ? list.sessions : [];
  const focused = document.activeElement?.closest?.("#sessions [data-id]")?.dataset.id;
  el.sessions.replaceChildren(...sessions.map(sessionRow));
  el.empty.hidden = sessions.length > 0;
  const live = sessions.filter(isLive).length;
  el.count.textContent = `(${sessions.length}${list.next_cursor ? "+" : ""} on this page${live ? `, ${live} live` : ""})`;
  el.updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  renderPager();
  if (focused) {
    const row = [...el.sessions.children].find((tr) => tr.dataset.id === focused);
    row?.querySelector("button")?.focus({ preventScroll: true });
  }
}

function sessionRow(session) {
  const metadata = metadataSummary(session.metadata);
  return h("tr", { dataset: { id: session.id, state: session.state }, class: isLive(session) ? "is-live" : null },
    h("td", { class: "cell-id", "data-label": "Session" },
      h("button", { type: "button", class: "link mono", title: session.id, "aria-label": `Open session ${session.id}` },
        shortId(session.id))),
    h("td", { "data-label": "State" }, badge(session.state)),
    h("td", { "data-label": "Created" },
      h("time", { datetime: session.created_at, title: formatTime(session.created_at, true) }, formatTime(session.created_at))),
    h("td", { class: "num", "data-label": "Chunks", title: `${session.committed} committed in order` }, chunksText(session)),
    h("td", { class: "num", "data-label": "Bytes", title: `${formatCount(session.bytes_received)} bytes` },
      formatBytes(session.bytes_received)),
    h("td", { "data-label": "Last seen" }, agoNode(session.last_seen_at)),
    h("td", { "data-label": "Complete" }, completeNode(session)),
    h("td", { class: "cell-meta", "data-label": "Metadata" },
      h("span", { class: "meta-summary", title: metadata }, metadata || "–")),
  );
}

function renderPager() {
  el.prev.disabled = admin.cursors.length === 0;
  el.next.disabled = !admin.lastList?.next_cursor;
  el.page.textContent = `Page ${admin.cursors.length + 1}`;
}

function applyFilters(event) {
  event?.preventDefault();
  const { filters, error } = readFilters();
  if (error) {
    showMessage(error, "error", "filters");
    return;
  }
  clearMessage();
  admin.filters = filters;
  showFilterCount();
  admin.cursor = null;
  admin.cursors = [];
  refresh();
}

/** "(2 active)" next to the collapsed filters' title. */
function showFilterCount() {
  const active = Object.keys(admin.filters).filter((k) => k !== "limit").length;
  el.filterCount.textContent = active ? `(${active} active)` : "";
}

function clearFilters() {
  el.filters.reset();
  applyFilters();
}

function nextPage() {
  const cursor = admin.lastList?.next_cursor;
  if (!cursor) return;
  admin.cursors.push(admin.cursor);
  admin.cursor = cursor;
  el.next.disabled = el.prev.disabled = true; // until this page is shown: no double steps
  refresh();
}

function previousPage() {
  if (admin.cursors.length === 0) return;
  admin.cursor = admin.cursors.pop();
  el.next.disabled = el.prev.disabled = true;
  refresh();
}

// ---- live updates ---------------------------------------------------------------------------------

function somethingLive() {
  const listed = admin.lastList?.sessions ?? [];
  return listed.some(isLive) || (el.detail.open && isLive(admin.lastDetail));
}

/** Refreshes again in 2 s while anything shown is recording or finishing and the tab is visible. */
function schedulePoll(retry = true) {
  stopPolling();
  const live = retry && somethingLive() && !document.hidden && !!getToken();
  el.live.hidden = !live;
  if (live) pollTimer = setTimeout(poll, POLL_MS);
}

function stopPolling() {
  clearTimeout(pollTimer);
  pollTimer = null;
}

function poll() {
  pollTimer = null;
  const detailLive = el.detail.open && isLive(admin.lastDetail);
  refresh();
  if (detailLive) loadDetail();
}

function onVisibility() {
  if (document.hidden) {
    stopPolling();
  } else if (getToken() && !el.console.hidden) {
    refresh();
    if (el.detail.open) loadDetail();
  }
}

/** Keeps "5 s ago" true between refreshes. */
function tickAgo() {
  if (document.hidden) return;
  for (const node of document.querySelectorAll("[data-ago]")) node.textContent = ago(node.dataset.ago);
}

// ---- detail ---------------------------------------------------------------------------------------

async function openDetail(id) {
  if (!id) return;
  admin.detailId = id;
  admin.lastDetail = null;
  resetConfirm();
  clearDetailMessage();
  const known = admin.lastList?.sessions?.find((s) => s.id === id);
  if (known) renderDetail({ missing: null, client: undefined, ...known });
  else clearDetail(id);
  if (!el.detail.open) el.detail.showModal(); // focuses the title (autofocus)
  await loadDetail();
}

async function loadDetail() {
  const id = admin.detailId;
  if (!id) return;
  const generation = ++detailGeneration;
  try {
    const detail = await api("GET", sessionPath(id));
    if (generation !== detailGeneration || id !== admin.detailId) return;
    admin.lastDetail = detail;
    renderDetail(detail);
    if (el.detailMessage.classList.contains("message-error")) clearDetailMessage();
    if (finalizing === id && !isLive(detail)) {
      finalizing = null;
      showDetailMessage(detail.state === "ready" ? "Finalized: the recording is ready." : `Finalized: the session is ${detail.state}.`, "info");
    }
  } catch (err) {
    if (generation !== detailGeneration || id !== admin.detailId) return;
    if (err.status === 404) {
      admin.lastDetail = null;
      el.actions.hidden = true;
      showDetailMessage("This session no longer exists: it was deleted.");
    } else {
      handleError(err, "detail");
    }
  } finally {
    if (generation === detailGeneration && getToken()) schedulePoll();
  }
}

function clearDetail(id) {
  el.detailId.textContent = id;
  el.detailState.replaceChildren();
  el.detailLive.textContent = "Loading…";
  el.detailFields.replaceChildren();
  el.recordingFields.replaceChildren();
  el.metadata.textContent = "";
  el.recording.hidden = true;
  el.recordingFactsSection.hidden = true;
  stopPlayer();
}

function field(label, value, options = {}) {
  return h("div", { class: options.wide ? "wide" : null },
    h("dt", {}, label),
    h("dd", { class: options.class ?? null, title: options.title ?? null }, value));
}

function renderDetail(d) {
  el.detailId.textContent = d.id;
  el.detailState.replaceChildren(badge(d.state));
  el.detailLive.textContent = isLive(d) ? "Refreshing every 2 s while it is live" : "";

  const missing = d.missing == null ? null : describeRanges(d.missing);
  const client = d.client;
  const fields = [
    field("MIME type", d.mime_type, { class: "mono" }),
    field("Created", `${formatTime(d.created_at, true)} (${ago(d.created_at)})`),
    field("Updated", `${formatTime(d.updated_at, true)} (${ago(d.updated_at)})`),
    field("Last seen", agoNode(d.last_seen_at)),
    field("Connections", formatCount(d.connections)),
    field("Chunks received", formatCount(d.chunks_received)),
    field("Committed in order", formatCount(d.committed)),
    field("Expected chunks", d.expected_chunks == null ? "not declared yet" : formatCount(d.expected_chunks)),
    field("Bytes received", formatBytesExact(d.bytes_received)),
    field("Missing chunks", missing == null ? "…" : missing.count ? `${missing.text} (${missing.count} chunk${missing.count > 1 ? "s" : ""})` : "none",
      { class: missing?.count ? "warn" : null }),
    field("Client address", client === undefined ? "…" : client?.addr ?? "never connected", { class: "mono" }),
    field("User agent", client === undefined ? "…" : client?.user_agent ?? "–", { wide: true }),
  ];
  if (d.failure_reason != null) {
    fields.push(field("Failure reason", String(d.failure_reason), { class: "err", wide: true }));
  }
  el.detailFields.replaceChildren(...fields);
  el.metadata.textContent = JSON.stringify(d.metadata ?? null, null, 2);

  renderRecording(d);

  const finalizable = isLive(d);
  el.finalize.hidden = !finalizable;
  if (!finalizable && admin.pending === "finalize") resetConfirm();
  if (admin.pending === null) el.actions.hidden = false;
}

/** The recording the detail view shows, if any. */
let shownRecording = null;

function renderRecording(d) {
  const recording = d.recording;
  if (!recording) {
    shownRecording = null;
    el.recording.hidden = true;
    el.recordingFactsSection.hidden = true;
    stopPlayer();
    return;
  }
  const src = recordingUrl(recording, d.id);
  if (el.player.getAttribute("src") !== src) el.player.src = src;
  el.download.href = src;
  el.download.download = `spool-${d.id}.${extensionFor(recording.mime_type)}`;
  const missing = describeRanges(recording.missing);
  shownRecording = recording;
  showRecordingInfo();
  el.recordingInfo.className = recording.complete ? "muted small" : "warn small";
  el.recording.hidden = false;

  el.recordingFields.replaceChildren(
    field("Size", formatBytesExact(recording.bytes)),
    field("Duration", recording.duration_ms == null ? "not measured by the server" : formatDuration(recording.duration_ms)),
    field("MIME type", recording.mime_type, { class: "mono" }),
    field("Complete", recording.complete ? "yes" : "no", { class: recording.complete ? "ok" : "warn" }),
    field("Missing chunks", missing.count ? `${missing.text} (${missing.count})` : "none"),
    field("Source bytes", formatBytesExact(recording.source_bytes)),
    field("SHA-256", recording.sha256, { class: "mono hash", wide: true }),
    field("Source SHA-256", recording.source_sha256, { class: "mono hash", wide: true }),
  );
  el.recordingFactsSection.hidden = false;
}

/** Size · length · completeness; the length from the player when the server did not measure it. */
function showRecordingInfo() {
  const recording = shownRecording;
  if (!recording) return;
  const parts = [formatBytes(recording.bytes)];
  const seconds = el.player.duration;
  if (recording.duration_ms != null) parts.push(formatDuration(recording.duration_ms));
  else if (Number.isFinite(seconds)) parts.push(formatDuration(seconds * 1000));
  const missing = describeRanges(recording.missing);
  parts.push(recording.complete ? "complete" : `incomplete: chunk${missing.count > 1 ? "s" : ""} ${missing.text} missing`);
  el.recordingInfo.textContent = parts.join(" · ");
}

function stopPlayer() {
  if (!el.player.getAttribute("src")) return;
  el.player.pause();
  el.player.removeAttribute("src");
  el.player.load();
}

function onDetailClosed() {
  // The close event is queued: the panel may already show another session.
  if (el.detail.open) return;
  stopPlayer();
  resetConfirm();
  admin.detailId = null;
  detailGeneration += 1;
  schedulePoll();
}

// ---- finalize and delete, each behind a confirmation ----------------------------------------------

const CONFIRMATIONS = {
  finalize: {
    text: "Finalize this session now with the chunks that have arrived? Chunks still missing stay missing, and the recorder cannot add more.",
    button: "Yes, finalize now",
    class: "btn btn-primary btn-small",
  },
  delete: {
    text: "Delete this session and its recording for good? This cannot be undone.",
    button: "Really delete?",
    class: "btn btn-danger btn-small",
  },
};

function askConfirm(kind) {
  if (!admin.detailId) return;
  const c = CONFIRMATIONS[kind];
  admin.pending = kind;
  el.confirmText.textContent = c.text;
  el.confirm.textContent = c.button;
  el.confirm.className = c.class;
  el.confirm.dataset.action = kind;
  el.actions.hidden = true;
  el.confirmBox.hidden = false;
  el.cancel.focus();
}

function resetConfirm() {
  admin.pending = null;
  el.confirmBox.hidden = true;
  el.actions.hidden = false;
  el.confirm.disabled = false;
  el.cancel.disabled = false;
  delete el.confirm.dataset.action;
}

async function confirmAction() {
  const kind = admin.pending;
  const id = admin.detailId;
  if (!kind || !id) return;
  el.confirm.disabled = true;
  el.cancel.disabled = true;
  try {
    if (kind === "finalize") {
      await api("POST", `${sessionPath(id)}/finalize`);
      admin.lastAction = { kind, id, ok: true };
      resetConfirm();
      finalizing = id;
      showDetailMessage("Finalizing with the chunks that arrived…", "info");
      await loadDetail();
      refresh();
    } else {
      await api("DELETE", `/v1/sessions/${encodeURIComponent(id)}`);
      admin.lastAction = { kind, id, ok: true };
      resetConfirm();
      el.detail.close();
      showMessage(`Session ${id} was deleted.`, "info", "info");
      refresh();
    }
  } catch (err) {
    admin.lastAction = { kind, id, ok: false, error: err.message };
    resetConfirm();
    handleError(err, "detail");
    if (!(err instanceof Unauthorized)) loadDetail();
  }
}

// ---- start ----------------------------------------------------------------------------------------

function init() {
  el.loginForm.addEventListener("submit", signIn);
  el.signOut.addEventListener("click", () => signOut());
  el.filters.addEventListener("submit", applyFilters);
  el.clear.addEventListener("click", clearFilters);
  el.next.addEventListener("click", nextPage);
  el.prev.addEventListener("click", previousPage);
  el.sessions.addEventListener("click", (event) => {
    const row = event.target.closest("tr[data-id]");
    if (row && !getSelection()?.toString()) openDetail(row.dataset.id);
  });
  el.closeDetail.addEventListener("click", () => el.detail.close());
  el.detail.addEventListener("close", onDetailClosed);
  // A click on the backdrop (the dialog box itself, outside its content) closes it.
  el.detail.addEventListener("click", (event) => {
    if (event.target === el.detail) el.detail.close();
  });
  el.finalize.addEventListener("click", () => askConfirm("finalize"));
  el.delete.addEventListener("click", () => askConfirm("delete"));
  el.cancel.addEventListener("click", resetConfirm);
  el.confirm.addEventListener("click", confirmAction);
  el.player.addEventListener("loadedmetadata", showRecordingInfo);
  document.addEventListener("visibilitychange", onVisibility);
  // On a phone the sessions come first: the filters fold away.
  if (matchMedia("(max-width: 47.99rem)").matches) el.filterBox.open = false;
  setInterval(tickAgo, 1000);

  if (getToken()) {
    showConsole();
    admin.filters = readFilters().filters ?? {};
    refresh();
  } else {
    showLogin();
  }
}

init();
