/**
 * @module spool-uploader
 * Moves one session's chunks from the local store to the server over the WebSocket, and finishes it.
 *
 * It keeps a socket open (spool-connection.js) for as long as anything is unacknowledged or the
 * recording is not final, resending from the server's `committed` after every `ready`. It sends at most
 * `window` chunks ahead of the acks (spool-outbox.js) and nothing while the socket's own buffer is full;
 * the rest waits in IndexedDB, not in memory. Shared by the live Recorder and by `Recorder.resumePending`.
 */

import { Connection, WS_OPEN } from "./spool-connection.js";
import { SpoolError, defaultWsUrl, getSession, sendFinishBeacon, waitForRecording } from "./spool-http.js";
import { Outbox } from "./spool-outbox.js";

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

/**
 * Uploads one session: sends each chunk once it is stored locally (chunkStored, or `available` for
 * chunks stored by an earlier page), until the server has acknowledged all of them; then, given the
 * final count (finish), sends `finish` and resolves with the recording. Any failure retrying cannot fix
 * ends it: onFatal is called and finish() rejects.
 */
export class Uploader {
  #opts;
  #session; // { id, token, server, wsUrl }
  #hooks; // { onChange(), onFatal(err) }
  #conn; // Connection: the socket
  #outbox; // Outbox: what is stored, what is acked, the window
  #nextSend = 0; // next index to put on the current socket

  #pumping = false;
  #pumpAgain = false;

  #finishN = null;
  #finishSocket = null; // the socket `finish` was last sent on
  #finishSent = false; // ever
  #polling = false;
  #done = false;
  #result;
  #settle;
  #listeners = [];

  /**
   * @param {{ session: { id: string, token: string, server: string, wsUrl?: string, maxChunkBytes?: number },
   *   store: object, available?: number, hooks?: { onChange?: () => void, onFatal?: (err: SpoolError) => void } }
   *   & Partial<typeof UPLOAD_DEFAULTS>} options `session`: the stored session record; `store`: the local
   *   store holding its chunks; `available`: chunks 0..available-1 are stored already; `hooks.onChange`:
   *   called whenever `committed`, `connection`, `finishSent` or `done` may have changed; `hooks.onFatal`:
   *   called once with the error that ended the upload (not for abort())
   */
  constructor({ session, store, available = 0, hooks = {}, ...tunables }) {
    this.#opts = { ...UPLOAD_DEFAULTS };
    for (const key of Object.keys(UPLOAD_DEFAULTS)) if (tunables[key] != null) this.#opts[key] = tunables[key];
    this.#session = { ...session, wsUrl: session.wsUrl || defaultWsUrl(session.server, session.id) };
    this.#outbox = new Outbox(store, session.id, available, this.#opts);
    this.#hooks = hooks;
    /** Largest chunk payload the server accepts (bytes); updated from every `ready`. */
    this.maxChunkBytes = session.maxChunkBytes ?? Infinity;
    this.#result = new Promise((resolve, reject) => {
      this.#settle = { resolve, reject };
    });
    this.#result.catch(() => {}); // the owner sees failures through onFatal or finish()
    this.#conn = new Connection(this.#session.wsUrl, this.#session.token, this.#opts, {
      onMessage: (msg) => this.#onMessage(msg),
      onChange: () => this.#hooks.onChange?.(),
      onRetry: (code) => this.#onRetry(code),
      onRefused: (...args) => this.#onRefused(...args),
      onError: (err) => this.#fail(err),
    });
  }

  /** Chunks the server holds durably (its cumulative ack). */
  get committed() {
    return this.#outbox.committed;
  }
  /** "connecting" | "open" | "closed" | "offline" */
  get connection() {
    return this.#conn.state;
  }
  /** Whether `finish` has been sent on some socket. */
  get finishSent() {
    return this.#finishSent;
  }
  /** Whether the upload is over: finalized, failed or aborted. */
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
    on(win, "online", () => this.#conn.wake());
    on(win, "offline", () => this.#conn.probe());
    on(doc, "visibilitychange", () => doc.visibilityState === "visible" && this.#conn.wake());
    on(win, "pagehide", () => this.#beacon());
    this.#conn.connect();
  }

  /**
   * Chunk `index` is now stored locally; chunks must come in index order.
   * @param {number} index
   * @param {ArrayBuffer} frame the chunk's wire frame
   * @param {boolean} [pinned] it is only in memory (the store refused it): keep it until acked
   */
  chunkStored(index, frame, pinned = false) {
    if (this.#done || !this.#outbox.add(index, frame, pinned)) return;
    this.#pump();
  }

  /**
   * Declares the final count: once every chunk below `n` is acknowledged, sends `finish` and waits for
   * the recording (from `finalized`, or by polling the session). Calling it again returns the same promise.
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

  /**
   * Stops everything without finishing; finish() rejects with `reason`.
   * @param {SpoolError} [reason]
   */
  abort(reason = new SpoolError("aborted", "Upload aborted.")) {
    this.#end(null, reason);
  }

  // ---- what the server says ------------------------------------------------------------------

  #onMessage(msg) {
    switch (msg?.type) {
      case "ready":
        return this.#onReady(msg);
      case "ack":
        return this.#onAck(msg.committed);
      case "finishing":
        return this.#onAck(msg.committed);
      case "finalized":
        return this.#end(msg.recording ?? null);
      default:
        return; // "pong" and anything newer
    }
  }

  #onReady(msg) {
    if (Number.isInteger(msg.max_chunk_bytes)) this.maxChunkBytes = msg.max_chunk_bytes;
    const committed = Number.isInteger(msg.committed) ? msg.committed : 0;
    // Resend exactly what the server lacks: everything from its `committed` on.
    this.#nextSend = committed;
    // Backoff resets on progress, not on `ready`: a server that greets and then fails every write
    // (a full disk answers 1011) must not be hammered with instant reconnects and resends.
    if (committed >= this.#outbox.available) this.#conn.resetBackoff();
    this.#advance(committed);
    this.#conn.opened();
    this.#pump();
  }

  #onAck(committed) {
    if (!Number.isInteger(committed)) return;
    this.#advance(committed);
    // A superseded socket may have delivered more than this one sent.
    if (this.#nextSend < committed) this.#nextSend = committed;
    this.#pump();
  }

  #advance(committed) {
    if (!this.#outbox.advance(committed)) return;
    this.#conn.resetBackoff();
    this.#hooks.onChange?.();
  }

  // The server is overloaded (4429): come back with less in flight.
  #onRetry(closeCode) {
    if (closeCode === 4429) this.#outbox.shrink();
  }

  async #onRefused(closeCode, [code, text], serverError) {
    // After finish, "no longer accepts chunks" usually means "already finalized": go and fetch it.
    if (closeCode === 4410 && this.#finishN !== null) return this.#poll(0);
    let message = serverError?.message ? `${text} (${serverError.message})` : text;
    if (closeCode === 4410) {
      const session = await getSession(this.#session.server, this.#session.id, this.#session.token).catch(() => null);
      if (session?.state) message += ` The server shows it as "${session.state}" (finalized after being idle too long?).`;
    }
    this.#fail(new SpoolError(serverError?.code ?? code, message, { closeCode }));
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
      const ws = this.#conn.socket;
      if (this.#done || !this.#conn.ready || ws?.readyState !== WS_OPEN) return;
      if (this.#nextSend >= this.#outbox.available) return this.#maybeSendFinish(ws);
      const room = this.#outbox.room(this.#nextSend);
      if (room <= 0) return; // the next ack pumps again
      if (ws.bufferedAmount > this.#opts.bufferedLimit) return this.#conn.waitForDrain(() => this.#pump());
      const from = this.#nextSend;
      const frames = await this.#outbox.frames(from, Math.min(room, this.#outbox.available - from));
      if (ws !== this.#conn.socket || !this.#conn.ready) return; // reconnected meanwhile; its ready re-pumps
      if (this.#nextSend !== from) continue; // an ack moved us on meanwhile
      if (frames[0]?.index !== from) return this.#fail(new SpoolError("chunk_missing", `Chunk ${from} is no longer stored locally; it cannot be resent.`));
      for (const { index, frame } of frames) {
        if (index !== this.#nextSend || ws.bufferedAmount > this.#opts.bufferedLimit) break;
        ws.send(frame);
        this.#nextSend = index + 1;
      }
    }
  }

  #maybeSendFinish(ws) {
    if (this.#finishN === null || this.#finishSocket === ws || this.#outbox.committed < this.#finishN) return;
    // Sent again on every new socket: finishing twice with the same N is fine, and it makes sure
    // the server saw it and will say `finalized` on this socket.
    ws.send(JSON.stringify({ type: "finish", chunks: this.#finishN }));
    this.#finishSocket = ws;
    this.#finishSent = true;
    this.#hooks.onChange?.();
    this.#poll(this.#opts.pollDelay);
  }

  // ---- the end -------------------------------------------------------------------------------

  /** Polls the session until it is ready or failed: the fallback when `finalized` does not come. */
  #poll(delay) {
    if (this.#polling) return;
    this.#polling = true;
    const timing = { delay, interval: this.#opts.pollInterval, stopped: () => this.#done };
    waitForRecording(this.#session, timing).then(
      (recording) => recording && this.#end(recording),
      (err) => this.#fail(err),
    );
  }

  #fail(err) {
    if (this.#done) return;
    this.#end(null, err);
    this.#hooks.onFatal?.(err);
  }

  #end(recording, err) {
    if (this.#done) return;
    this.#done = true;
    for (const off of this.#listeners.splice(0)) off();
    this.#outbox.clear();
    this.#conn.close(recording ? "finalized" : "done");
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
