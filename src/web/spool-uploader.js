/**
 * @module spool-uploader
 * Moves one session's chunks from the local store to the server over the WebSocket, and finishes it.
 *
 * It keeps one socket open for as long as anything is unacknowledged or the recording is not final:
 * reconnecting forever with full-jitter exponential backoff, right away when the network or the tab
 * comes back, resending from the server's `committed` after every `ready`. It sends at most `window`
 * chunks ahead of the acks and nothing while the socket's own buffer is full; the rest waits in
 * IndexedDB, not in memory. Shared by the live Recorder and by `Recorder.resumePending`.
 */

import {
  FATAL_CLOSE_CODES,
  SpoolError,
  defaultWsUrl,
  getSession,
  sendFinishBeacon,
  socketUrl,
} from "./spool-http.js";

const WS_OPEN = 1;
/** Close codes the protocol says to retry; any other code is retried unless the server said otherwise. */
const RETRIED_CLOSE_CODES = new Set([1001, 1006, 1011, 4408, 4429]);

/** Tunables; every one can be overridden through the Recorder options of the same name. */
export const UPLOAD_DEFAULTS = Object.freeze({
  /** Most chunks sent but not yet acknowledged. */
  window: 64,
  /** Do not hand the socket more while `ws.bufferedAmount` is above this many bytes. */
  bufferedLimit: 1 << 20,
  /** Send `{"type":"ping"}` this often (ms)... */
  pingInterval: 10_000,
  /** ...and give up on the socket if nothing at all arrives within this long after it (ms). */
  pingTimeout: 10_000,
  /** Give up on a socket that has not said `ready` within this long (ms). */
  connectTimeout: 15_000,
  /** Reconnect delay = random(0, min(backoffCap, backoffBase * 2^attempt)) (ms). */
  backoffBase: 250,
  backoffCap: 15_000,
  /** After `finish` is sent, poll GET /v1/sessions/{id} every pollInterval, starting after pollDelay (ms). */
  pollInterval: 1_000,
  pollDelay: 2_000,
  /** Recently stored frames kept in memory so a healthy upload never reads IndexedDB back. */
  cacheSize: 64,
});

/** The UPLOAD_DEFAULTS keys of a larger options object. */
export function uploadTunables(options) {
  return Object.fromEntries(Object.keys(UPLOAD_DEFAULTS).map((key) => [key, options[key]]));
}

export class Uploader {
  #opts;
  #session; // { id, token, server, wsUrl }
  #store;
  #hooks; // { onChange(), onFatal(err) }

  #available; // chunks 0..available-1 are stored locally (or were, and are acked)
  #committed = 0; // the server has every index below this durably
  #nextSend = 0; // next index to put on the current socket
  #window; // effective window; halved on 4429, regrown as acks come
  #windowCredit = 0;
  #cache = new Map(); // index -> frame, most recent chunks
  #pinned = new Map(); // index -> frame that could not be stored locally: kept until acked

  #ws = null;
  #ready = false;
  #connection = "closed";
  #attempt = 0;
  #retryTimer = null;
  #connectTimer = null;
  #heartbeat = null;
  #pingAt = 0;
  #pingOutstanding = false;
  #pingBuffered = 0;
  #lastServerError = null;
  #drainTimer = null;

  #pumping = false;
  #pumpAgain = false;

  #finishN = null;
  #finishSentHere = false; // on the current socket
  #finishSent = false; // ever
  #polling = false;
  #done = false;
  #result;
  #settle;
  #listeners = [];

  /**
   * @param {{ session: { id: string, token: string, server: string, wsUrl?: string, maxChunkBytes?: number },
   *   store: object, available?: number, hooks?: { onChange?: () => void, onFatal?: (err: SpoolError) => void } }
   *   & Partial<typeof UPLOAD_DEFAULTS>} options
   */
  constructor({ session, store, available = 0, hooks = {}, ...tunables }) {
    this.#opts = { ...UPLOAD_DEFAULTS };
    for (const key of Object.keys(UPLOAD_DEFAULTS)) if (tunables[key] != null) this.#opts[key] = tunables[key];
    this.#session = { ...session, wsUrl: session.wsUrl || defaultWsUrl(session.server, session.id) };
    this.#store = store;
    this.#available = available;
    this.#hooks = hooks;
    this.#window = this.#opts.window;
    this.maxChunkBytes = session.maxChunkBytes ?? Infinity;
    this.#result = new Promise((resolve, reject) => {
      this.#settle = { resolve, reject };
    });
    this.#result.catch(() => {}); // the owner sees failures through onFatal or finish()
  }

  /** Chunks the server holds durably (its cumulative ack). */
  get committed() {
    return this.#committed;
  }
  /** "connecting" | "open" | "closed" | "offline" */
  get connection() {
    return this.#connection;
  }
  /** Whether `finish` has been sent on some socket. */
  get finishSent() {
    return this.#finishSent;
  }
  get done() {
    return this.#done;
  }

  /** Starts connecting, and listening to the page for network and visibility changes. */
  start() {
    const on = (target, type, fn) => {
      if (!target?.addEventListener) return;
      target.addEventListener(type, fn);
      this.#listeners.push(() => target.removeEventListener(type, fn));
    };
    const win = typeof window === "object" ? window : undefined;
    const doc = typeof document === "object" ? document : undefined;
    on(win, "online", () => this.#wake());
    on(win, "offline", () => this.#probe());
    on(doc, "visibilitychange", () => doc.visibilityState === "visible" && this.#wake());
    on(win, "pagehide", () => this.#beacon());
    this.#connect();
  }

  /** Chunk `index` is now stored locally (`pinned`: it is only in memory, keep it until acked). */
  chunkStored(index, frame, pinned = false) {
    if (this.#done || index !== this.#available) return;
    this.#available = index + 1;
    (pinned ? this.#pinned : this.#cache).set(index, frame);
    while (this.#cache.size > this.#opts.cacheSize) this.#cache.delete(this.#cache.keys().next().value);
    this.#pump();
  }

  /**
   * Declares the final count: once every chunk below `n` is acknowledged, sends `finish` and waits for
   * the recording (from `finalized`, or by polling the session).
   * @param {number} n
   * @returns {Promise<object>} the protocol's `recording` object
   */
  finish(n) {
    if (this.#finishN === null) {
      this.#finishN = n;
      this.#pump();
    }
    return this.#result;
  }

  /** Stops everything without finishing; finish() rejects with `reason`. */
  abort(reason = new SpoolError("aborted", "Upload aborted.")) {
    this.#end(null, reason);
  }

  // ---- connection ----------------------------------------------------------------------------

  #connect() {
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    if (this.#done) return;
    let ws;
    try {
      ws = new WebSocket(socketUrl(this.#session.wsUrl, this.#session.token));
    } catch (cause) {
      return this.#fail(new SpoolError("bad_url", `Cannot open ${this.#session.wsUrl}: ${cause.message}`, { cause }));
    }
    ws.binaryType = "arraybuffer";
    this.#ws = ws;
    this.#ready = false;
    this.#finishSentHere = false;
    this.#lastServerError = null;
    // Events of a socket we have given up on are ignored: it may take minutes to report its close.
    ws.onmessage = (ev) => ws === this.#ws && this.#onMessage(ev);
    ws.onclose = (ev) => ws === this.#ws && this.#onClose(ev);
    this.#connectTimer = setTimeout(() => ws === this.#ws && !this.#ready && this.#drop("no ready"), this.#opts.connectTimeout);
    this.#setConnection("connecting");
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
    switch (msg?.type) {
      case "ready":
        return this.#onReady(msg);
      case "ack":
        return this.#onAck(msg.committed);
      case "finishing":
        return this.#onAck(msg.committed);
      case "finalized":
        return this.#end(msg.recording ?? null);
      case "error":
        this.#lastServerError = msg;
        return;
      default:
        return; // "pong" and anything newer
    }
  }

  #onReady(msg) {
    clearTimeout(this.#connectTimer);
    this.#ready = true;
    if (Number.isInteger(msg.max_chunk_bytes)) this.maxChunkBytes = msg.max_chunk_bytes;
    const committed = Number.isInteger(msg.committed) ? msg.committed : 0;
    // Resend exactly what the server lacks: everything from its `committed` on.
    this.#nextSend = committed;
    // Backoff resets on progress, not on `ready`: a server that greets and then fails every write
    // (a full disk answers 1011) must not be hammered with instant reconnects and resends.
    if (committed >= this.#available) this.#attempt = 0;
    this.#advance(committed);
    this.#startHeartbeat(this.#ws);
    this.#setConnection("open");
    this.#pump();
  }

  #onAck(committed) {
    if (!Number.isInteger(committed)) return;
    this.#advance(committed);
    // A superseded socket may have delivered more than this one sent.
    if (this.#nextSend < committed) this.#nextSend = committed;
    this.#pump();
  }

  /** Raises `committed`, forgets what it covers (memory and IndexedDB), regrows the window. */
  #advance(committed) {
    if (committed <= this.#committed) return;
    const acked = committed - this.#committed;
    this.#committed = committed;
    this.#attempt = 0;
    for (const map of [this.#cache, this.#pinned]) for (const i of map.keys()) if (i < committed) map.delete(i);
    if (this.#window < this.#opts.window && (this.#windowCredit += acked) >= this.#window) {
      this.#window += 1;
      this.#windowCredit = 0;
    }
    this.#store.deleteChunksBelow(this.#session.id, committed).catch((err) => console.warn("spool: could not delete acked chunks", err));
    this.#hooks.onChange?.();
  }

  #onClose({ code }) {
    const serverError = this.#lastServerError;
    this.#teardown();
    if (this.#done) return;
    const fatal =
      FATAL_CLOSE_CODES.get(code) ??
      // A code the protocol does not list: believe the server's own `retryable`.
      (serverError?.retryable === false && !RETRIED_CLOSE_CODES.has(code) ? [serverError.code ?? `closed_${code}`, "The server refused the connection."] : null);
    if (fatal) return this.#onFatalClose(code, fatal, serverError);
    if (code === 4429) this.#window = Math.max(1, Math.floor(this.#window / 2));
    this.#scheduleReconnect(code === 4429);
  }

  async #onFatalClose(closeCode, [code, text], serverError) {
    this.#setConnection("closed");
    // After finish, "no longer accepts chunks" usually means "already finalized": go and fetch it.
    if (closeCode === 4410 && this.#finishN !== null) return this.#poll(0);
    let message = serverError?.message ? `${text} (${serverError.message})` : text;
    if (closeCode === 4410) {
      const session = await getSession(this.#session.server, this.#session.id, this.#session.token).catch(() => null);
      if (session?.state) message += ` The server shows it as "${session.state}" (finalized after being idle too long?).`;
    }
    this.#fail(new SpoolError(serverError?.code ?? code, message, { closeCode }));
  }

  #scheduleReconnect(slow) {
    if (this.#done) return;
    const base = slow ? Math.max(1_000, this.#opts.backoffBase * 8) : this.#opts.backoffBase;
    const cap = slow ? Math.max(30_000, this.#opts.backoffCap) : this.#opts.backoffCap;
    const delay = (slow ? 1_000 : 0) + Math.random() * Math.min(cap, base * 2 ** this.#attempt);
    this.#attempt = Math.min(this.#attempt + 1, 30);
    this.#setConnection(globalThis.navigator?.onLine === false ? "offline" : "closed");
    this.#retryTimer = setTimeout(() => this.#connect(), delay);
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

  /** Network or tab is back: reconnect now instead of at the end of the backoff; if open, check it. */
  #wake() {
    if (this.#done) return;
    if (this.#retryTimer !== null) {
      this.#attempt = 0;
      this.#connect();
    } else {
      this.#probe();
    }
  }

  /** Pings now, so a socket that died with the network is noticed within pingTimeout. */
  #probe() {
    if (this.#ready && !this.#pingOutstanding) this.#ping(this.#ws);
    else if (!this.#ws && globalThis.navigator?.onLine === false) this.#setConnection("offline");
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

  #setConnection(state) {
    if (this.#connection === state) return;
    this.#connection = state;
    this.#hooks.onChange?.();
  }

  // ---- sending -------------------------------------------------------------------------------

  /** Sends whatever may be sent now; one run at a time, re-run if poked meanwhile. */
  async #pump() {
    if (this.#pumping) {
      this.#pumpAgain = true;
      return;
    }
    this.#pumping = true;
    try {
      do {
        this.#pumpAgain = false;
        await this.#sendSome();
      } while (this.#pumpAgain && !this.#done);
    } catch (err) {
      console.warn("spool: reading chunks back failed; retrying", err);
      setTimeout(() => this.#pump(), 1_000);
    } finally {
      this.#pumping = false;
    }
  }

  async #sendSome() {
    for (;;) {
      const ws = this.#ws;
      if (this.#done || !this.#ready || ws?.readyState !== WS_OPEN) return;
      if (this.#nextSend >= this.#available) return this.#maybeSendFinish(ws);
      const room = this.#committed + this.#window - this.#nextSend;
      if (room <= 0) return; // the next ack pumps again
      if (ws.bufferedAmount > this.#opts.bufferedLimit) return this.#waitForDrain();
      const from = this.#nextSend;
      const frames = await this.#frames(from, Math.min(room, this.#available - from));
      if (ws !== this.#ws || !this.#ready) return; // reconnected meanwhile; its ready re-pumps
      if (this.#nextSend !== from) continue; // an ack moved us on meanwhile
      if (frames[0]?.index !== from) return this.#fail(new SpoolError("chunk_missing", `Chunk ${from} is no longer stored locally; it cannot be resent.`));
      for (const { index, frame } of frames) {
        if (index !== this.#nextSend || ws.bufferedAmount > this.#opts.bufferedLimit) break;
        ws.send(frame);
        this.#nextSend = index + 1;
      }
    }
  }

  /** Contiguous frames from `from`: from memory when possible, else read back from the store. */
  async #frames(from, count) {
    const frames = [];
    for (let i = from; i < from + count; i++) {
      const frame = this.#cache.get(i) ?? this.#pinned.get(i);
      if (!frame) break;
      frames.push({ index: i, frame });
    }
    if (frames.length > 0) return frames;
    return this.#store.getChunks(this.#session.id, from, count);
  }

  // There is no event for bufferedAmount going down, so look again shortly.
  #waitForDrain() {
    if (this.#drainTimer) return;
    this.#drainTimer = setTimeout(() => {
      this.#drainTimer = null;
      this.#pump();
    }, 50);
  }

  #maybeSendFinish(ws) {
    if (this.#finishN === null || this.#finishSentHere || this.#committed < this.#finishN) return;
    // Sent again on every new socket: finishing twice with the same N is fine, and it makes sure
    // the server saw it and will say `finalized` on this socket.
    ws.send(JSON.stringify({ type: "finish", chunks: this.#finishN }));
    this.#finishSentHere = true;
    this.#finishSent = true;
    this.#hooks.onChange?.();
    this.#poll(this.#opts.pollDelay);
  }

  // ---- the end -------------------------------------------------------------------------------

  /** Polls the session until it is ready or failed: the fallback when `finalized` does not come. */
  async #poll(delay) {
    if (this.#polling) return;
    this.#polling = true;
    await new Promise((resolve) => setTimeout(resolve, delay));
    const { server, id, token } = this.#session;
    while (!this.#done) {
      try {
        const session = await getSession(server, id, token);
        if (session?.state === "ready" && session.recording) return this.#end(session.recording);
        if (session?.state === "failed") {
          return this.#fail(new SpoolError("session_failed", "The server could not finalize this recording."));
        }
      } catch (err) {
        if (err.status === 404) return this.#fail(new SpoolError("unknown_session", "The server no longer knows this session.", { status: 404 }));
        if (err.status === 401 || err.status === 403) return this.#fail(new SpoolError("unauthorized", err.message, { status: err.status }));
      }
      await new Promise((resolve) => setTimeout(resolve, this.#opts.pollInterval));
    }
  }

  #fail(err) {
    if (this.#done) return;
    this.#end(null, err);
    this.#hooks.onFatal?.(err);
  }

  #end(recording, err) {
    if (this.#done) return;
    this.#done = true;
    const ws = this.#ws;
    clearTimeout(this.#retryTimer);
    this.#teardown();
    try {
      ws?.close(1000, recording ? "finalized" : "done");
    } catch {
      // Already closing.
    }
    for (const off of this.#listeners.splice(0)) off();
    this.#cache.clear();
    this.#pinned.clear();
    this.#setConnection("closed");
    if (err) this.#settle.reject(err);
    else this.#settle.resolve(recording);
    this.#hooks.onChange?.();
  }

  /** The page is going away: if the count is known, declare it by beacon so the server can finish. */
  #beacon() {
    if (this.#done || this.#finishN === null) return;
    const { server, id, token } = this.#session;
    sendFinishBeacon(server, id, token, this.#finishN);
  }
}
