/**
 * @module spool-connection
 * One session's WebSocket, kept alive for the uploader: reconnects with full-jitter exponential backoff
 * (at once when asked to wake), drops a socket that never says `ready` or stops answering pings, and
 * tells the close codes worth retrying from those that are not. What goes over it is the uploader's part.
 */

import { FATAL_CLOSE_CODES, SpoolError, withToken } from "./spool-http.js";

export const WS_OPEN = 1;
/** Close codes the protocol says to retry; any other code is retried unless the server said otherwise. */
const RETRIED_CLOSE_CODES = new Set([1001, 1006, 1011, 4408, 4429]);

/**
 * @typedef {object} ConnectionHooks
 * @property {(msg: any) => void} onMessage a JSON message on the current socket (`error` messages are kept here)
 * @property {() => void} onChange `state` changed
 * @property {(closeCode: number) => void} onRetry the socket closed with a retryable code; a reconnect follows
 * @property {(closeCode: number, reason: [string, string], serverError: object | null) => void} onRefused
 *   the server closed the socket with a code that must not be retried (`reason`: code and text to report)
 * @property {(err: SpoolError) => void} onError the socket cannot even be created
 */

export class Connection {
  #url;
  #token;
  #opts; // pingInterval, pingTimeout, connectTimeout, backoffBase, backoffCap
  #hooks;
  #ws = null;
  #ready = false;
  #state = "closed";
  #closed = false; // for good
  #attempt = 0;
  #retryTimer = null;
  #connectTimer = null;
  #drainTimer = null;
  #heartbeat = null;
  #pingAt = 0;
  #pingOutstanding = false;
  #pingBuffered = 0;
  #lastServerError = null;

  /**
   * @param {string} wsUrl the session's `ws_url`
   * @param {string} token the session token, sent in the URL (browsers cannot set WebSocket headers)
   * @param {{ pingInterval: number, pingTimeout: number, connectTimeout: number, backoffBase: number, backoffCap: number }} opts
   * @param {ConnectionHooks} hooks
   */
  constructor(wsUrl, token, opts, hooks) {
    this.#url = wsUrl;
    this.#token = token;
    this.#opts = opts;
    this.#hooks = hooks;
  }

  /** The current socket, or null between sockets. */
  get socket() {
    return this.#ws;
  }
  /** Whether the current socket has said `ready` (and opened() was called). */
  get ready() {
    return this.#ready;
  }
  /** "connecting" | "open" | "closed" | "offline" */
  get state() {
    return this.#state;
  }

  /** Opens a socket now. */
  connect() {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    if (this.#closed) return;
    let ws;
    try {
      ws = new WebSocket(withToken(this.#url, this.#token));
    } catch (cause) {
      return this.#hooks.onError(new SpoolError("bad_url", `Cannot open ${this.#url}: ${cause.message}`, { cause }));
    }
    ws.binaryType = "arraybuffer";
    this.#ws = ws;
    this.#ready = false;
    this.#lastServerError = null;
    // Events of a socket we have given up on are ignored: it may take minutes to report its close.
    ws.onmessage = (ev) => ws === this.#ws && this.#onMessage(ev);
    ws.onclose = (ev) => ws === this.#ws && this.#onClose(ev);
    this.#connectTimer = setTimeout(() => ws === this.#ws && !this.#ready && this.#drop("no ready"), this.#opts.connectTimeout);
    this.#setState("connecting");
  }

  /** The server said `ready` on the current socket: it is open, and the heartbeat starts. */
  opened() {
    clearTimeout(this.#connectTimer);
    this.#ready = true;
    this.#startHeartbeat(this.#ws);
    this.#setState("open");
  }

  /** Progress was made: the next reconnect starts from the shortest delay again. */
  resetBackoff() {
    this.#attempt = 0;
  }

  /** Network or tab is back: reconnect now instead of at the end of the backoff; if open, check it. */
  wake() {
    if (this.#closed) return;
    if (this.#retryTimer !== null) {
      this.#attempt = 0;
      this.connect();
    } else {
      this.probe();
    }
  }

  /** Pings now, so a socket that died with the network is noticed within pingTimeout. */
  probe() {
    if (this.#ready && !this.#pingOutstanding) this.#ping(this.#ws);
    else if (!this.#ws && globalThis.navigator?.onLine === false) this.#setState("offline");
  }

  /** Calls `fn` in 50 ms, for another look at `bufferedAmount` (no event says it went down), unless the socket is lost first. */
  waitForDrain(fn) {
    if (this.#drainTimer) return;
    this.#drainTimer = setTimeout(() => {
      this.#drainTimer = null;
      fn();
    }, 50);
  }

  /** Closes the socket for good (code 1000) and never reconnects. */
  close(reason) {
    this.#closed = true;
    const ws = this.#ws;
    clearTimeout(this.#retryTimer);
    this.#teardown();
    try {
      ws?.close(1000, reason);
    } catch {
      // Already closing.
    }
    this.#setState("closed");
  }

  #onMessage(ev) {
    this.#pingOutstanding = false; // any message proves the socket alive
    if (typeof ev.data !== "string") return;
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (msg?.type === "error") this.#lastServerError = msg;
    else this.#hooks.onMessage(msg);
  }

  #onClose({ code }) {
    const serverError = this.#lastServerError;
    this.#teardown();
    if (this.#closed) return;
    const refusal =
      FATAL_CLOSE_CODES.get(code) ??
      // A code the protocol does not list: believe the server's own `retryable`.
      (serverError?.retryable === false && !RETRIED_CLOSE_CODES.has(code) ? [serverError.code ?? `closed_${code}`, "The server refused the connection."] : null);
    if (refusal) {
      this.#setState("closed");
      return this.#hooks.onRefused(code, refusal, serverError);
    }
    this.#hooks.onRetry(code);
    // An overloaded server says when to come back; never sooner (plus jitter, so returns spread).
    const hint = code === 4429 && Number.isFinite(serverError?.retry_after_ms) ? serverError.retry_after_ms : 0;
    this.#scheduleReconnect(code === 4429, Math.min(hint, 60_000));
  }

  #scheduleReconnect(slow, atLeast = 0) {
    if (this.#closed) return;
    const base = slow ? Math.max(1_000, this.#opts.backoffBase * 8) : this.#opts.backoffBase;
    const cap = slow ? Math.max(30_000, this.#opts.backoffCap) : this.#opts.backoffCap;
    const delay = Math.max(slow ? 1_000 : 0, atLeast) + Math.random() * Math.min(cap, base * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    this.#setState(globalThis.navigator?.onLine === false ? "offline" : "closed");
    this.#retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Abandons the current socket (dead or stuck) and reconnects. */
  #drop(reason) {
    const ws = this.#ws;
    this.#teardown();
    try {
      ws?.close(4000, reason);
    } catch {
      // Already closing.
    }
    this.#scheduleReconnect(false);
  }

  #teardown() {
    clearTimeout(this.#connectTimer);
    clearInterval(this.#heartbeat);
    clearTimeout(this.#drainTimer);
    this.#drainTimer = null;
    this.#ws = null;
    this.#ready = false;
  }

  // Browsers cannot send WebSocket pings, hence the protocol's JSON ping.
  #startHeartbeat(ws) {
    clearInterval(this.#heartbeat);
    this.#pingAt = Date.now();
    this.#pingOutstanding = false;
    const tick = Math.max(50, Math.min(1_000, this.#opts.pingInterval / 4, this.#opts.pingTimeout / 4));
    this.#heartbeat = setInterval(() => {
      if (ws !== this.#ws) return;
      const now = Date.now();
      if (!this.#pingOutstanding) {
        if (now - this.#pingAt >= this.#opts.pingInterval) this.#ping(ws);
      } else if (ws.bufferedAmount < this.#pingBuffered) {
        // The ping is queued behind our own data and that data is moving: the peer is reading.
        this.#pingBuffered = ws.bufferedAmount;
        this.#pingAt = now;
      } else if (now - this.#pingAt >= this.#opts.pingTimeout) {
        this.#drop("ping timeout");
      }
    }, tick);
  }

  #ping(ws) {
    if (ws?.readyState !== WS_OPEN) return;
    ws.send('{"type":"ping"}');
    this.#pingAt = Date.now();
    this.#pingOutstanding = true;
    this.#pingBuffered = ws.bufferedAmount;
  }

  #setState(state) {
    if (this.#state === state) return;
    this.#state = state;
    this.#hooks.onChange();
  }
}
