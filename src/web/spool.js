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
 * - `spool-frame.js`: CRC-32C and the binary chunk frame.
 * - `spool-store.js`: IndexedDB (every chunk is stored before it is sent), recent list, tab locks.
 * - `spool-uploader.js`: the WebSocket — resend from `committed`, window, backpressure, reconnects, finish.
 * - `spool-http.js`: the HTTP calls, SpoolError, the close-code table.
 * - `spool-resume.js`: `Recorder.resumePending`, finishing what an earlier page left behind.
 * This module numbers the MediaRecorder's chunks, stores them, and drives the session's life cycle.
 */

import { FLAG_NEW_STREAM, encodeFrame } from "./spool-frame.js";
import { SpoolError, createSession, deleteSession, normalizeServer } from "./spool-http.js";
import { resumePending } from "./spool-resume.js";
import { addRecent, loadRecent, openStore, recentEntry, sessionLockName, tryLock } from "./spool-store.js";
import { UPLOAD_DEFAULTS, Uploader, uploadTunables } from "./spool-uploader.js";

export { SpoolError } from "./spool-http.js";
export { crc32c, encodeFrame, decodeFrame } from "./spool-frame.js";

/** Container types tried in order when no `mimeType` is given. */
export const PREFERRED_MIME_TYPES = Object.freeze(["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4"]);

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
 * The first of PREFERRED_MIME_TYPES this browser's MediaRecorder supports, or "" (let it choose).
 * @returns {string}
 */
export function pickMimeType() {
  if (typeof MediaRecorder === "undefined" || typeof MediaRecorder.isTypeSupported !== "function") return "";
  return PREFERRED_MIME_TYPES.find((type) => MediaRecorder.isTypeSupported(type)) ?? "";
}

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
 * - `progress` `{ state, captured, acked, pending, bytes, connection }` on every change;
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
  #stream = null;
  #ownStream = false;
  #mr = null;
  #mimeType = "";
  #session = null;
  #createdAt = 0;
  #store = null;
  #uploader = null;
  #releaseLock = null;
  #captured = 0;
  #bytes = 0;
  #capture = Promise.resolve(); // chunks are stored strictly in index order
  #maxChunkBytes = Infinity;
  #failure = null;
  #stopPromise = null;
  #recording = null;
  #storageWarned = false;
  #connection = "closed";
  #pageListeners = [];

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
    return this.#session;
  }
  /** The container actually recorded (MediaRecorder's own `mimeType`). */
  get mimeType() {
    return this.#mimeType;
  }
  /** The MediaStream being recorded (e.g. for a level meter). */
  get stream() {
    return this.#stream;
  }
  /** The `recording` object once stop() has resolved. */
  get recording() {
    return this.#recording;
  }
  /** The current `progress` detail. */
  get progress() {
    const acked = this.#uploader?.committed ?? 0;
    return {
      state: this.#state,
      captured: this.#captured,
      acked,
      pending: Math.max(0, this.#captured - acked),
      bytes: this.#bytes,
      connection: this.#connection,
    };
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
      await this.#openInput(stream);
      const mr = this.#newMediaRecorder();
      // The session must carry the container really produced, which MediaRecorder reports.
      this.#mimeType = mr.mimeType || "";
      await this.#openSession();
      this.#listenToPage();
      mr.start(this.#opts.timeslice);
      this.#setState("recording");
    } catch (err) {
      await this.#abandonStart();
      const { code, message } = describeStartError(err);
      this.#emitError(code, message, true);
      throw err;
    }
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
    await this.#endMediaRecorder();
    await this.#capture; // the final chunk is numbered and stored before N is declared
    this.#releaseInput();
    if (this.#failure) throw this.#failure;
    const n = this.#captured;
    const { id, token } = this.#session;
    if (n === 0) {
      // A recording needs at least one chunk (the server refuses `finish` with 0): drop the empty session.
      this.#uploader?.abort();
      await this.#store.deleteSession(id).catch(() => {});
      deleteSession(this.#server, id, token);
      this.#fatal(new SpoolError("empty_recording", "Nothing was recorded: the recorder produced no audio."));
      throw this.#failure;
    }
    await this.#store.updateSession(id, { finished: true, expected: n }).catch((err) => this.#storageFailed(err));
    let recording;
    try {
      recording = await this.#uploader.finish(n);
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
    await this.#store.deleteSession(id).catch((err) => console.warn("spool: could not clean up local storage", err));
    addRecent(this.#opts.dbName, recentEntry({ id, token, server: this.#server, createdAt: this.#createdAt }, recording));
    this.#recording = recording;
    this.#unlistenToPage();
    this.#releaseLock?.();
    this.#setState("ready");
    return recording;
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
  static recentRecordings({ dbName = "spool", server } = {}) {
    const list = loadRecent(dbName);
    return server ? list.filter((r) => r.server === normalizeServer(server)) : list;
  }

  /**
   * A URL `<audio>`, `<a download>` and the like can load without headers: the recording's url plus the token.
   * @param {{ url: string }} recording
   * @param {string} token the session token
   */
  static playbackUrl(recording, token) {
    return `${recording.url}${recording.url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
  }

  // ---- start -------------------------------------------------------------------------------------

  async #openInput(stream) {
    if (typeof MediaRecorder === "undefined") {
      throw new SpoolError("unsupported", "This browser cannot record audio: it has no MediaRecorder.");
    }
    if (stream) {
      this.#stream = stream;
      return;
    }
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new SpoolError(
        "unsupported",
        globalThis.isSecureContext === false
          ? "The microphone is only available on secure pages (HTTPS or localhost)."
          : "This browser cannot open the microphone.",
      );
    }
    this.#stream = await navigator.mediaDevices.getUserMedia({ audio: this.#opts.audio });
    this.#ownStream = true;
  }

  #newMediaRecorder() {
    const type = this.#opts.mimeType ?? pickMimeType();
    const options = type ? { mimeType: type } : {};
    if (this.#opts.audioBitsPerSecond) options.audioBitsPerSecond = this.#opts.audioBitsPerSecond;
    const mr = new MediaRecorder(this.#stream, options);
    let first = true; // the first chunk of every MediaRecorder carries a container header
    mr.addEventListener("dataavailable", (ev) => {
      if (!ev.data || ev.data.size === 0) return; // an empty blob takes no index
      this.#onChunk(ev.data, first);
      first = false;
    });
    mr.addEventListener("error", (ev) => this.#onMediaRecorderError(mr, ev));
    mr.addEventListener("stop", () => this.#onMediaRecorderStop(mr));
    this.#mr = mr;
    return mr;
  }

  async #openSession() {
    const { metadata, apiKey, dbName, durability } = this.#opts;
    const request = { mimeType: this.#mimeType, metadata };
    // Where the server needs an API key, the page's own backend creates the session (the key stays there).
    const created = this.#opts.createSession
      ? await this.#opts.createSession(request)
      : await createSession(this.#server, { ...request, apiKey });
    const { id, token } = created ?? {};
    if (typeof id !== "string" || typeof token !== "string") {
      throw new SpoolError("bad_session", "createSession must resolve with the server's {id, token, ws_url, max_chunk_bytes}.");
    }
    this.#session = Object.freeze({ id, token });
    this.#maxChunkBytes = created.max_chunk_bytes ?? Infinity;
    this.#createdAt = Date.now();
    // Locked before it is stored, so resumePending in another tab never sees it unlocked.
    this.#releaseLock = (await tryLock(sessionLockName(dbName, id))) ?? (() => {});
    this.#store = await openStore(dbName, durability);
    const record = {
      id,
      token,
      server: this.#server,
      wsUrl: created.ws_url,
      mimeType: this.#mimeType,
      metadata,
      maxChunkBytes: this.#maxChunkBytes,
      captured: 0,
      finished: false,
      expected: null,
      createdAt: this.#createdAt,
    };
    await this.#store.putSession(record).catch((err) => this.#storageFailed(err));
    this.#uploader = new Uploader({
      session: record,
      store: this.#store,
      ...uploadTunables(this.#opts),
      hooks: { onChange: () => this.#onUploaderChange(), onFatal: (err) => this.#fatal(err) },
    });
    this.#uploader.start();
  }

  async #abandonStart() {
    this.#uploader?.abort();
    this.#uploader = null;
    this.#releaseInput();
    this.#unlistenToPage();
    if (this.#session) {
      const { id, token } = this.#session;
      await this.#store?.deleteSession(id).catch(() => {});
      deleteSession(this.#server, id, token);
    }
    this.#releaseLock?.();
    this.#session = null;
    this.#mr = null;
    this.#stream = null;
  }

  // ---- capture -----------------------------------------------------------------------------------

  #onChunk(blob, firstOfRecorder) {
    if (this.#failure) return;
    // Numbered now, in the order MediaRecorder emits: indexes are dense and never reused.
    const index = this.#captured++;
    this.#bytes += blob.size;
    const flags = index === 0 || firstOfRecorder ? FLAG_NEW_STREAM : 0;
    this.dispatchEvent(new CustomEvent("chunk", { detail: { index, size: blob.size, data: blob } }));
    this.#capture = this.#capture.then(() => this.#storeChunk(index, flags, blob));
    this.#emitProgress();
  }

  /** Frames the chunk, writes it to IndexedDB, and only then hands it to the uploader. */
  async #storeChunk(index, flags, blob) {
    if (this.#failure) return;
    try {
      const payload = new Uint8Array(await blob.arrayBuffer());
      const max = Math.min(this.#maxChunkBytes, this.#uploader?.maxChunkBytes ?? Infinity);
      if (payload.length > max) {
        return this.#fatal(
          new SpoolError("chunk_too_large", `Chunk ${index} is ${payload.length} bytes, over the server's limit of ${max}: use a smaller timeslice.`),
        );
      }
      const frame = encodeFrame(index, flags, payload);
      let pinned = false;
      try {
        await this.#store.putChunk(this.#session.id, index, frame);
      } catch (err) {
        pinned = true; // still sent, from memory; only reload-safety is lost
        this.#storageFailed(err);
      }
      this.#uploader?.chunkStored(index, frame, pinned);
    } catch (err) {
      this.#fatal(new SpoolError("capture_failed", `Chunk ${index} could not be read: ${err?.message ?? err}`, { cause: err }));
    }
  }

  #onMediaRecorderError(mr, ev) {
    if (mr !== this.#mr || this.#state !== "recording") return;
    this.#emitError("recorder_error", `MediaRecorder failed: ${ev.error?.message ?? "unknown error"}`, false);
    if (!this.#stream.getAudioTracks().some((t) => t.readyState === "live")) return;
    // The input is still there: go on with a fresh MediaRecorder (its first chunk is flagged).
    try {
      this.#newMediaRecorder().start(this.#opts.timeslice);
    } catch (err) {
      this.#emitError("input_ended", `Recording could not continue: ${err.message}. Call stop() to keep what was recorded.`, false);
    }
  }

  #onMediaRecorderStop(mr) {
    if (mr !== this.#mr || this.#state !== "recording") return;
    this.#emitError("input_ended", "The audio input stopped (unplugged or revoked). Call stop() to keep what was recorded.", false);
  }

  async #endMediaRecorder() {
    const mr = this.#mr;
    if (!mr || mr.state === "inactive") return;
    await new Promise((resolve) => {
      // The last `dataavailable` comes before `stop`; the timer only guards against a recorder that never stops.
      const timer = setTimeout(resolve, 5_000);
      mr.addEventListener("stop", () => (clearTimeout(timer), resolve()), { once: true });
      try {
        mr.stop();
      } catch {
        clearTimeout(timer);
        resolve();
      }
    });
  }

  /** Stops the mic tracks this Recorder opened itself (never those of a stream passed in). */
  #releaseInput() {
    if (this.#ownStream) for (const track of this.#stream?.getTracks() ?? []) track.stop();
    this.#ownStream = false;
  }

  // The tail since the last timeslice would die with the page: ask for it while it can still be stored.
  #listenToPage() {
    if (typeof window !== "object") return;
    const flush = () => {
      if (this.#mr?.state === "recording") {
        try {
          this.#mr.requestData();
        } catch {
          // Inactive meanwhile.
        }
      }
    };
    const onVisibility = () => document.visibilityState === "hidden" && flush();
    window.addEventListener("pagehide", flush);
    document.addEventListener("visibilitychange", onVisibility);
    this.#pageListeners = [
      () => window.removeEventListener("pagehide", flush),
      () => document.removeEventListener("visibilitychange", onVisibility),
    ];
  }

  #unlistenToPage() {
    for (const off of this.#pageListeners.splice(0)) off();
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
    if (this.#mr?.state && this.#mr.state !== "inactive") {
      try {
        this.#mr.stop();
      } catch {
        // Already stopping.
      }
    }
    this.#releaseInput();
    this.#unlistenToPage();
    this.#releaseLock?.();
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

// ---- helpers -------------------------------------------------------------------------------------

function definedOnly(options) {
  return Object.fromEntries(Object.entries(options ?? {}).filter(([, value]) => value !== undefined));
}

function describeStartError(err) {
  if (err instanceof SpoolError) return { code: err.code, message: err.message };
  switch (err?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return { code: "mic_denied", message: "Microphone access was refused." };
    case "NotFoundError":
    case "OverconstrainedError":
      return { code: "mic_not_found", message: "No microphone was found." };
    case "NotReadableError":
    case "AbortError":
      return { code: "mic_unavailable", message: "The microphone could not be opened (in use by another app?)." };
    case "NotSupportedError":
      return { code: "unsupported", message: `This browser cannot record this format: ${err.message}` };
    default:
      return { code: "start_failed", message: err?.message ?? String(err) };
  }
}
