/**
 * @module spool-http
 * The HTTP half of the Spool protocol (create, poll, finish-by-beacon, delete), the error type every
 * module throws, and the table of WebSocket close codes that reconnecting cannot fix.
 */

/** An error with a stable `code` (snake_case) a program can branch on. */
export class SpoolError extends Error {
  /**
   * @param {string} code e.g. "unknown_session", "chunk_too_large", "network"
   * @param {string} message human text
   * @param {{ fatal?: boolean, status?: number, closeCode?: number, cause?: unknown }} [info]
   */
  constructor(code, message, info = {}) {
    super(message, info.cause === undefined ? undefined : { cause: info.cause });
    this.name = "SpoolError";
    this.code = code;
    /** True when retrying cannot help. */
    this.fatal = info.fatal ?? true;
    /** HTTP status, when the error came from an HTTP answer. */
    this.status = info.status;
    /** WebSocket close code, when the error came from the server closing the socket. */
    this.closeCode = info.closeCode;
  }
}

/** Close codes the client must not retry (the protocol document, src/protocol.md), with the code and text it reports. */
export const FATAL_CLOSE_CODES = new Map([
  [4400, ["malformed", "The server rejected a frame or message as malformed."]],
  [4401, ["unauthorized", "The server refused the session token."]],
  [4404, ["unknown_session", "The server does not know this session."]],
  [4409, ["chunk_conflict", "The server already holds different bytes for one of the chunks."]],
  [4410, ["session_closed", "The session no longer accepts audio."]],
  [4413, ["chunk_too_large", "A chunk was larger than the server accepts."]],
  [4499, ["superseded", "Another connection (another tab?) took over this session."]],
]);

/**
 * Canonical form of a server base URL: absolute, no query, no trailing slash.
 * Sessions are stored under this form, so `resumePending` finds them whatever spelling is passed.
 * @param {string} server
 */
export function normalizeServer(server) {
  const base = typeof location === "object" ? location.href : undefined;
  const url = new URL(server, base);
  url.search = "";
  url.hash = "";
  return url.href.replace(/\/+$/, "");
}

const sessionUrl = (server, id) => `${server}/v1/sessions/${encodeURIComponent(id)}`;

/**
 * fetch + JSON, turning every failure into a SpoolError (`fatal: false` for network trouble and 5xx/429).
 * @param {string} url
 * @param {{ method?: string, bearer?: string, body?: unknown }} [req]
 */
export async function requestJson(url, { method = "GET", bearer, body } = {}) {
  const headers = { Accept: "application/json" };
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let res;
  let text;
  try {
    res = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    text = await res.text();
  } catch (cause) {
    throw new SpoolError("network", `${method} ${url} failed: ${cause?.message ?? cause}`, {
      fatal: false,
      cause,
    });
  }
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    // Not JSON (a proxy's error page, say): the status below still tells what happened.
  }
  if (!res.ok) {
    const err = json?.error ?? {};
    const retryable = res.status >= 500 || res.status === 429 || res.status === 408;
    throw new SpoolError(err.code ?? `http_${res.status}`, err.message ?? `${method} ${url}: HTTP ${res.status}`, {
      fatal: !retryable,
      status: res.status,
    });
  }
  return json;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * POST /v1/sessions. Retries briefly on network errors and 5xx (a lost answer may leave an empty
 * session behind on the server; it is finalized empty after the idle limit, which is harmless).
 * @returns {Promise<{ id: string, token: string, ws_url: string, max_chunk_bytes: number }>}
 */
export async function createSession(server, { mimeType, metadata, apiKey }, attempts = 3) {
  const body = { metadata: metadata ?? {} };
  if (mimeType) body.mime_type = mimeType;
  for (let attempt = 1; ; attempt++) {
    try {
      return await requestJson(`${server}/v1/sessions`, { method: "POST", bearer: apiKey, body });
    } catch (err) {
      if (err.fatal || attempt >= attempts) throw err;
      await sleep(400 * 2 ** attempt * Math.random());
    }
  }
}

/** GET /v1/sessions/{id} with the session token. */
export function getSession(server, id, token) {
  return requestJson(sessionUrl(server, id), { bearer: token });
}

/** DELETE /v1/sessions/{id}; best effort, never throws. */
export async function deleteSession(server, id, token) {
  try {
    await requestJson(sessionUrl(server, id), { method: "DELETE", bearer: token });
  } catch {
    // Nothing to keep: the server finalizes an abandoned empty session by itself.
  }
}

/**
 * Polls GET /v1/sessions/{id} until the recording is ready: the fallback when `finalized` does not come.
 * Network trouble and 5xx are simply asked again.
 * @param {{ server: string, id: string, token: string }} session
 * @param {{ delay: number, interval: number, stopped: () => boolean }} timing first poll after `delay` ms,
 *   then every `interval` ms until the recording comes or `stopped()`
 * @returns {Promise<object | null>} the recording, or null once stopped; rejects when the session failed or is
 *   unknown, or the token is refused
 */
export async function waitForRecording({ server, id, token }, { delay, interval, stopped }) {
  await sleep(delay);
  while (!stopped()) {
    const session = await getSession(server, id, token).catch((err) => {
      if (err.status === 404) throw new SpoolError("unknown_session", "The server no longer knows this session.", { status: 404 });
      if (err.status === 401 || err.status === 403) throw new SpoolError("unauthorized", err.message, { status: err.status });
      return null;
    });
    if (session?.state === "ready" && session.recording) return session.recording;
    if (session?.state === "failed") throw new SpoolError("session_failed", "The server could not finalize this recording.");
    await sleep(interval);
  }
  return null;
}

/**
 * Declares the chunk count with navigator.sendBeacon, which survives the page going away.
 * The body is a plain string so the beacon needs no CORS preflight; the server accepts any type.
 * @returns {boolean} whether the browser queued the beacon
 */
export function sendFinishBeacon(server, id, token, chunks) {
  if (typeof navigator !== "object" || typeof navigator.sendBeacon !== "function") return false;
  try {
    return navigator.sendBeacon(withToken(`${sessionUrl(server, id)}/finish`, token), JSON.stringify({ chunks }));
  } catch {
    return false;
  }
}

/**
 * `url` with the session token in its query, for what cannot send an Authorization header:
 * WebSockets, beacons, `<audio>` and download links.
 */
export function withToken(url, token) {
  return `${url}${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
}

/** Best guess at `ws_url` for records stored without one. */
export function defaultWsUrl(server, id) {
  return `${server.replace(/^http/, "ws")}/v1/sessions/${encodeURIComponent(id)}/ws`;
}
