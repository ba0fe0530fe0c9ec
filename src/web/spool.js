/**
 * @module spool
 * Spool browser client: records audio with MediaRecorder and streams it to a Spool server so that no
 * audio is lost to a dropped network, a server restart or a page reload.
 *
 * ```js
 * import { Recorder } from "/client/spool.js";
 * const rec = new Recorder({ server: location.origin, timeslice: 250 });
 * rec.addEventListener("progress", (e) => console.log(e.detail)); // { state, captured, acked, pending, bytes, connection }
 * await rec.start();
 * const recording = await rec.stop(); // { url, bytes, sha256, duration_ms, ... }
 * // after a reload:
 * const recovered = await Recorder.resumePending({ server: location.origin });
 * ```
 *
 * How the pieces fit (sibling modules, served next to this one):
 * - `spool-capture.js`: the input and MediaRecorder; numbers, frames and stores each chunk.
 * - `spool-session.js`: a live session on both ends — created, locked, stored, uploaded, kept or discarded.
 * - `spool-frame.js`: CRC-32C and the binary chunk frame.
 * - `spool-store.js`: IndexedDB (every chunk is stored before it is sent), recent list, tab locks.
 * - `spool-uploader.js`: the upload — resend from `committed`, backpressure, finish.
 * - `spool-outbox.js`: what is stored, what is acked, the window of chunks in flight.
 * - `spool-connection.js`: the WebSocket kept alive — reconnects with backoff, heartbeat, close codes.
 * - `spool-http.js`: the HTTP calls, SpoolError, the close-code table.
 * - `spool-resume.js`: `Recorder.resumePending`, finishing what an earlier page left behind.
 * This module drives a recording's life cycle: its state and its events.
 */

import { Capture, describeStartError } from "./spool-capture.js";
import { SpoolError, normalizeServer, withToken } from "./spool-http.js";
import { resumePending } from "./spool-resume.js";
import { LiveSession } from "./spool-session.js";
import { loadRecent } from "./spool-store.js";
import { UPLOAD_DEFAULTS } from "./spool-uploader.js";

export { SpoolError } from "./spool-http.js";
export { crc32c, encodeFrame, decodeFrame } from "./spool-frame.js";
export { PREFERRED_MIME_TYPES, describeStartError, pickMimeType } from "./spool-capture.js";

const DEFAULTS = Object.freeze({
  server: undefined, // location.origin
  timeslice: 250,
  mimeType: undefined,
  metadata: {},
  apiKey: undefined,
  createSession: undefined,
  audio: true,
  audioBitsPerSecond: undefined,
  dbName: "spool",
  durability: "strict",
  ...UPLOAD_DEFAULTS,
});

/**
 * @typedef {object} RecorderOptions
 * @property {string} [server] base URL of the Spool server (default `location.origin`)
 * @property {number} [timeslice] ms per chunk (default 250); keep chunks well under `max_chunk_bytes`
 * @property {string} [mimeType] container to record; default: the first supported of PREFERRED_MIME_TYPES
 * @property {object} [metadata] stored with the session on the server
 * @property {string} [apiKey] sent as `Authorization: Bearer` when creating the session
 * @property {(request: {mimeType: string, metadata: object}) => Promise<object>} [createSession] creates the
 *   session instead of `POST /v1/sessions` from the browser — e.g. through your backend, which holds the API key
 *   and forwards `{mime_type, metadata}`; resolves with the server's response `{id, token, ws_url, max_chunk_bytes}`
 * @property {boolean | MediaTrackConstraints} [audio] getUserMedia audio constraints (default true)
 * @property {number} [audioBitsPerSecond] passed to MediaRecorder
 * @property {string} [dbName] IndexedDB database name (default "spool")
 * @property {"strict" | "relaxed" | "default"} [durability] IndexedDB durability of chunk writes (default "strict")
 * @property {number} [window] most chunks in flight without an ack (default 64)
 * @property {number} [bufferedLimit] bytes; no sending while `ws.bufferedAmount` is above (default 1 MiB)
 * @property {number} [pingInterval] ms between pings (default 10 000)
 * @property {number} [pingTimeout] ms to wait for any message after a ping (default 10 000)
 * @property {number} [connectTimeout] ms to wait for `ready` on a new socket (default 15 000)
 * @property {number} [backoffBase] ms (default 250) — reconnect delay random(0, min(cap, base·2^attempt))
 * @property {number} [backoffCap] ms (default 15 000)
 * @property {number} [pollInterval] ms between session polls after `finish` (default 1 000)
 * @property {number} [pollDelay] ms after `finish` before polling starts (default 2 000)
 * @property {number} [cacheSize] recent frames kept in memory (default 64)
 */

/**
 * One recording. Events (all `CustomEvent`s):
 * - `progress` `{ state, captured, acked, pending, bytes, connection, restarts }` on every change
 *   (`restarts`: times the mic ended, e.g. a headset unplugged, and recording went on with a new one);
 *   state is "idle" | "recording" | "stopping" | "finishing" | "ready" | "failed".
 * - `chunk` `{ index, size, data: Blob }` when MediaRecorder hands over a (non-empty) chunk.
 * - `connection` `{ connection }`: "connecting" | "open" | "closed" | "offline".
 * - `error` `{ code, message, fatal }` (+ `closeCode` when the server closed the socket).
 */
export class Recorder extends EventTarget {
  #opts;
  #server;
  #state = "idle";
  #startPromise = null;
  #capture = null; // Capture: input, MediaRecorder, chunks into the store
  #live = null; // LiveSession: server session, lock, local record, uploader
  #mimeType = "";
  #failure = null;
  #stopPromise = null;
  #recording = null;
  #storageWarned = false;
  #connection = "closed";

  /** @param {RecorderOptions} [options] */
  constructor(options = {}) {
    super();
    this.#opts = { ...DEFAULTS, ...definedOnly(options) };
    this.#server = normalizeServer(this.#opts.server ?? location.origin);
  }

  /** Whether this browser can record at all. */
  static isSupported() {
    return typeof MediaRecorder !== "undefined" && !!globalThis.navigator?.mediaDevices?.getUserMedia;
  }

  /** "idle" | "recording" | "stopping" | "finishing" | "ready" | "failed" */
  get state() {
    return this.#state;
  }
  /** `{ id, token }` once start() has created the session, else null. */
  get session() {
    return this.#live?.session ?? null;
  }
  /** The container actually recorded (MediaRecorder's own `mimeType`). */
  get mimeType() {
    return this.#mimeType;
  }
  /** The MediaStream being recorded (e.g. for a level meter). */
  get stream() {
    return this.#capture?.stream ?? null;
  }
  /** The `recording` object once stop() has resolved. */
  get recording() {
    return this.#recording;
  }
  /** The current `progress` detail. */
  get progress() {
    const acked = this.#uploader?.committed ?? 0;
    const captured = this.#capture?.captured ?? 0;
    return {
      state: this.#state,
      captured,
      acked,
      pending: Math.max(0, captured - acked),
      bytes: this.#capture?.bytes ?? 0,
      connection: this.#connection,
      restarts: this.#capture?.restarts ?? 0,
    };
  }

  get #uploader() {
    return this.#live?.uploader ?? null;
  }

  /**
   * Opens the microphone (unless `stream` is given), creates the session, starts uploading and recording.
   * Rejects with the getUserMedia DOMException (e.g. `NotAllowedError`) when the mic is refused, or with a
   * SpoolError (`unsupported`, `network`, …); an `error` event is dispatched as well.
   * @param {MediaStream} [stream] record this instead of opening the mic; its tracks are left running
   */
  async start(stream) {
    if (this.#state !== "idle" || this.#startPromise) {
      throw new SpoolError("bad_state", "This Recorder was already started; use a new Recorder per recording.");
    }
    this.#startPromise = this.#start(stream);
    try {
      await this.#startPromise;
    } catch (err) {
      // A failed start may be tried again.
      this.#startPromise = null;
      this.#stopPromise = null;
      throw err;
    }
  }

  async #start(stream) {
    try {
      this.#capture = new Capture(this.#opts, this.#captureHooks());
      // The session must carry the container really produced, which MediaRecorder reports.
      this.#mimeType = await this.#capture.open(stream);
      this.#live = new LiveSession(this.#server, this.#opts, {
        onChange: () => this.#onUploaderChange(),
        onFatal: (err) => this.#fatal(err),
        onStorageFailed: (err) => this.#storageFailed(err),
      });
      await this.#live.open(this.#mimeType);
      const { store, session, uploader, maxChunkBytes } = this.#live;
      this.#capture.start({ store, sessionId: session.id, uploader, maxChunkBytes });
      this.#setState("recording");
    } catch (err) {
      await this.#abandonStart();
      const { code, message } = describeStartError(err);
      this.#emitError(code, message, true);
      throw err;
    }
  }

  #captureHooks() {
    return {
      onChunk: (detail) => {
        this.dispatchEvent(new CustomEvent("chunk", { detail }));
        this.#emitProgress();
      },
      onError: (code, message) => this.#emitError(code, message, false),
      onFatal: (err) => this.#fatal(err),
      onStorageFailed: (err) => this.#storageFailed(err),
      onRestart: () => this.#emitProgress(),
    };
  }

  async #abandonStart() {
    const discarded = this.#live?.discard(); // the upload stops at once; deleting takes a moment
    this.#capture?.release();
    await discarded;
    this.#live = null;
    this.#capture = null;
  }

  /**
   * Stops recording, waits until the server holds every chunk, finishes the session and waits for the
   * recording. Calling it again returns the same promise.
   * @returns {Promise<object>} the protocol's `recording` object
   *   (`{ url, bytes, sha256, duration_ms, mime_type, complete, missing, source_bytes, source_sha256 }`)
   */
  stop() {
    if (this.#state === "idle" && !this.#startPromise) {
      return Promise.reject(new SpoolError("bad_state", "stop() was called before start()."));
    }
    this.#stopPromise ??= this.#stop();
    return this.#stopPromise;
  }

  async #stop() {
    await this.#startPromise.catch(() => {}); // stop() right after start() waits for it
    if (this.#state === "idle") throw new SpoolError("bad_state", "start() failed, there is nothing to stop.");
    if (!this.#failure) this.#setState("stopping");
    await this.#capture.end();
    if (this.#failure) throw this.#failure;
    const n = this.#capture.captured;
    if (n === 0) return this.#dropEmpty();
    let recording;
    try {
      recording = await this.#live.finish(n);
    } catch (err) {
      this.#fatal(err);
      throw this.#failure;
    }
    if (recording.complete === false) {
      // The server finalized without part of this recording (it was unreachable for longer than its idle
      // limit): say so rather than present a short recording as whole.
      const missing = JSON.stringify(recording.missing ?? []);
      this.#emitError("incomplete_recording", `The server finalized this recording without chunks ${missing} of ${n}.`, false);
    }
    await this.#live.keep(recording);
    this.#recording = recording;
    this.#capture.release();
    this.#live.releaseLock();
    this.#setState("ready");
    return recording;
  }

  // A recording needs at least one chunk (the server refuses `finish` with 0): drop the empty session.
  async #dropEmpty() {
    await this.#live.discard();
    this.#fatal(new SpoolError("empty_recording", "Nothing was recorded: the recorder produced no audio."));
    throw this.#failure;
  }

  /**
   * After a reload (or crash), finishes every session this browser left unfinished on `server`: reconnects,
   * resends what the server lacks, declares the count and waits for each recording. Sessions being
   * recorded in another tab are left alone. A session the server no longer knows, or that failed, is
   * dropped from local storage with a console warning. Keeps trying while the network is away, unless
   * `signal` aborts.
   * @param {RecorderOptions & { signal?: AbortSignal,
   *   onProgress?: (p: { id: string, state: string, captured: number, acked: number, pending: number, connection: string }) => void }} [options]
   * @returns {Promise<object[]>} the recordings, one per session finished
   */
  static resumePending(options = {}) {
    const opts = { ...DEFAULTS, ...definedOnly(options) };
    return resumePending({ ...opts, server: normalizeServer(opts.server ?? location.origin) });
  }

  /**
   * This browser's recent recordings, newest first:
   * `[{ id, token, server, createdAt, finishedAt, url, bytes, duration_ms, mime_type, complete }]`.
   * `url` is absolute; play it with {@link Recorder.playbackUrl}.
   * @param {{ dbName?: string, server?: string }} [options]
   */
  static recentRecordings({ dbName = DEFAULTS.dbName, server } = {}) {
    const list = loadRecent(dbName);
    return server ? list.filter((r) => r.server === normalizeServer(server)) : list;
  }

  /**
   * A URL `<audio>`, `<a download>` and the like can load without headers: the recording's url plus the token.
   * @param {{ url: string }} recording
   * @param {string} token the session token
   */
  static playbackUrl(recording, token) {
    return withToken(recording.url, token);
  }

  // ---- state and events --------------------------------------------------------------------------

  #onUploaderChange() {
    const connection = this.#uploader?.connection ?? "closed";
    if (connection !== this.#connection) {
      this.#connection = connection;
      this.dispatchEvent(new CustomEvent("connection", { detail: { connection } }));
    }
    if (this.#state === "stopping" && this.#uploader?.finishSent) this.#setState("finishing");
    else this.#emitProgress();
  }

  /** Something retrying cannot fix: report it once, stop recording, keep local data for resumePending. */
  #fatal(err) {
    if (this.#failure || this.#state === "ready") return;
    this.#failure = err;
    this.#uploader?.abort(err);
    this.#capture?.halt();
    this.#live?.releaseLock();
    this.#emitError(err.code ?? "error", err.message, true, err.closeCode);
    this.#setState("failed");
  }

  #storageFailed(err) {
    if (this.#storageWarned) return;
    this.#storageWarned = true;
    this.#emitError("storage_failed", `Could not write to IndexedDB (${err?.message ?? err}); a reload now would lose unsent audio.`, false);
  }

  #setState(state) {
    if (this.#state === state) return;
    this.#state = state;
    this.#emitProgress();
  }

  #emitProgress() {
    this.dispatchEvent(new CustomEvent("progress", { detail: this.progress }));
  }

  #emitError(code, message, fatal, closeCode) {
    const detail = { code, message, fatal };
    if (closeCode) detail.closeCode = closeCode;
    this.dispatchEvent(new CustomEvent("error", { detail }));
  }
}

function definedOnly(options) {
  return Object.fromEntries(Object.entries(options ?? {}).filter(([, value]) => value !== undefined));
}
