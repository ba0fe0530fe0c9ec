/**
 * @module spool-capture
 * The recording side of a session: opens the input, runs MediaRecorder on it, numbers every non-empty
 * chunk in the order MediaRecorder emits it, frames it and writes it to the local store, and only then
 * hands it to the uploader. Also asks for the unsent tail when the page is hidden or going away, and
 * when the microphone it opened ends (a headset unplugged, a device switched), opens the input again
 * and goes on with a new MediaRecorder in the same session: its first chunk is flagged as a new
 * stream, and the server joins the streams into one timeline.
 */

import { FLAG_NEW_STREAM, encodeFrame } from "./spool-frame.js";
import { SpoolError } from "./spool-http.js";

/** Container types tried in order when no `mimeType` is given. */
export const PREFERRED_MIME_TYPES = Object.freeze(["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4"]);

/**
 * The first of PREFERRED_MIME_TYPES this browser's MediaRecorder supports, or "" (let it choose).
 * @returns {string}
 */
export function pickMimeType() {
  if (typeof MediaRecorder === "undefined" || typeof MediaRecorder.isTypeSupported !== "function") return "";
  return PREFERRED_MIME_TYPES.find((type) => MediaRecorder.isTypeSupported(type)) ?? "";
}

/**
 * The `code` and `message` of the `error` event for whatever start() rejected with: a SpoolError keeps
 * its own; getUserMedia and MediaRecorder exceptions (`NotAllowedError`, …) get a stable code
 * ("mic_denied", "mic_not_found", "mic_unavailable", "unsupported"); anything else is "start_failed".
 * @param {unknown} err
 * @returns {{ code: string, message: string }}
 */
export function describeStartError(err) {
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

/**
 * @typedef {object} CaptureHooks
 * @property {(detail: { index: number, size: number, data: Blob, newStream: boolean }) => void} onChunk a chunk was
 *   numbered; `newStream`: it begins a recorder stream (chunk 0, and the first chunk after a restart)
 * @property {(code: string, message: string) => void} onError trouble recording goes on despite
 * @property {(err: SpoolError) => void} onFatal trouble that ends the recording
 * @property {(err: unknown) => void} onStorageFailed a chunk could not be written locally (it is still sent)
 * @property {() => void} [onRestart] the input ended and recording went on with a new one
 */

/** One recording's input and MediaRecorder(s), and the ordered path of each chunk into the store. */
export class Capture {
  #opts; // { audio, mimeType, audioBitsPerSecond, timeslice }
  #hooks;
  #stream = null;
  #ownStream = false;
  #mr = null;
  #live = false; // recording and not ending: MediaRecorder trouble is reported
  #halted = false; // no more chunks are taken
  #captured = 0;
  #bytes = 0;
  #restarts = 0;
  #restarting = false;
  #retiring = Promise.resolve(); // a recorder stopped by a restart, until its last chunk is out
  #device = null; // { deviceId, groupId } of the mic opened here, to notice it going away
  #queue = Promise.resolve(); // chunks are stored strictly in index order
  #sink = null; // { store, sessionId, uploader, maxChunkBytes }
  #pageListeners = [];

  /**
   * @param {{ audio: boolean | MediaTrackConstraints, mimeType?: string, audioBitsPerSecond?: number, timeslice: number }} options
   * @param {CaptureHooks} hooks
   */
  constructor(options, hooks) {
    this.#opts = options;
    this.#hooks = hooks;
  }

  /** The MediaStream recorded, once open() has it. */
  get stream() {
    return this.#stream;
  }
  /** Chunks numbered so far. */
  get captured() {
    return this.#captured;
  }
  /** Bytes of those chunks. */
  get bytes() {
    return this.#bytes;
  }
  /** Times the input ended and recording went on with a new one. */
  get restarts() {
    return this.#restarts;
  }

  /**
   * Opens the input (the mic, unless `stream` is given) and a MediaRecorder on it, not yet started.
   * @param {MediaStream} [stream]
   * @returns {Promise<string>} the container MediaRecorder will produce ("" if it does not say)
   */
  async open(stream) {
    await this.#openInput(stream);
    return this.#newMediaRecorder().mimeType || "";
  }

  /**
   * Starts recording; each chunk goes to `sink.store`, then to `sink.uploader`.
   * @param {{ store: object, sessionId: string, uploader: object, maxChunkBytes: number }} sink
   */
  start(sink) {
    this.#sink = sink;
    this.#listenToPage();
    this.#mr.start(this.#opts.timeslice);
    this.#live = true;
  }

  /** Stops MediaRecorder; resolves once its last chunk is stored, with the mic released. */
  async end() {
    this.#live = false;
    await this.#retiring; // a restart in progress: its old recorder's last chunk counts too
    await this.#endMediaRecorder();
    await this.#queue; // the final chunk is numbered and stored before N is declared
    this.#releaseInput();
  }

  /** Stops at once after a fatal error: later chunks are dropped. */
  halt() {
    this.#halted = true;
    this.#live = false;
    if (this.#mr?.state && this.#mr.state !== "inactive") {
      try {
        this.#mr.stop();
      } catch {
        // Already stopping.
      }
    }
    this.release();
  }

  /** Releases the mic (if opened here) and the page listeners. */
  release() {
    this.#releaseInput();
    for (const off of this.#pageListeners.splice(0)) off();
  }

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
    this.#watchInput();
    navigator.mediaDevices.addEventListener?.("devicechange", this.#onDeviceChange);
    this.#pageListeners.push(() => navigator.mediaDevices.removeEventListener?.("devicechange", this.#onDeviceChange));
  }

  /** Notices when a track of the mic opened here ends, and remembers which device it is. */
  #watchInput() {
    const [track] = this.#stream.getAudioTracks();
    track?.addEventListener("ended", () => this.#inputEnded(), { once: true });
    const { deviceId, groupId } = track?.getSettings?.() ?? {};
    this.#device = deviceId ? { deviceId, groupId } : null;
  }

  /**
   * The devices changed (a headset plugged in or out). If the mic recorded is gone, or it is the
   * system default and the default is now another device, go on with the new input. (Some systems
   * leave the old track live but silent instead of ending it.)
   */
  #onDeviceChange = async () => {
    if (!this.#live || this.#halted || this.#restarting || !this.#device) return;
    let devices;
    try {
      devices = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "audioinput");
    } catch {
      return; // nothing to compare with: the "ended" event still covers a device that goes away
    }
    const { deviceId, groupId } = this.#device;
    const now = devices.find((d) => d.deviceId === deviceId);
    const moved = !now || (deviceId === "default" && groupId && now.groupId && now.groupId !== groupId);
    if (moved) this.#inputEnded();
  };

  /**
   * The input ended while recording. A mic opened here is opened again (the default device, or the
   * same constraints) and a new MediaRecorder goes on in the same session; a stream the page passed
   * in cannot be reopened, so that is reported instead.
   */
  async #inputEnded() {
    if (!this.#live || this.#halted || this.#restarting) return;
    if (!this.#ownStream) {
      this.#hooks.onError("input_ended", "The audio input stopped (unplugged or revoked). Call stop() to keep what was recorded.");
      return;
    }
    this.#restarting = true;
    try {
      const old = this.#mr;
      this.#mr = null; // its last chunks are still numbered; its stop is not an error
      this.#retiring = this.#stopRecorder(old);
      for (const track of this.#stream.getTracks()) track.stop();
      const stream = await navigator.mediaDevices.getUserMedia({ audio: this.#opts.audio });
      if (!this.#live || this.#halted) {
        // stop() came while the input was reopening: this mic is not wanted any more.
        for (const track of stream.getTracks()) track.stop();
        return;
      }
      this.#stream = stream;
      this.#watchInput();
      this.#newMediaRecorder().start(this.#opts.timeslice);
      this.#restarts += 1;
      this.#hooks.onRestart?.();
    } catch (err) {
      this.#hooks.onError("input_ended", `The audio input stopped and could not be opened again: ${err?.message ?? err}. Call stop() to keep what was recorded.`);
    } finally {
      this.#restarting = false;
    }
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

  #onChunk(blob, firstOfRecorder) {
    if (this.#halted) return;
    // Numbered now, in the order MediaRecorder emits: indexes are dense and never reused.
    const index = this.#captured++;
    this.#bytes += blob.size;
    const flags = index === 0 || firstOfRecorder ? FLAG_NEW_STREAM : 0;
    this.#queue = this.#queue.then(() => this.#storeChunk(index, flags, blob));
    this.#hooks.onChunk({ index, size: blob.size, data: blob, newStream: flags !== 0 });
  }

  /** Frames the chunk, writes it to the store, and only then hands it to the uploader. */
  async #storeChunk(index, flags, blob) {
    if (this.#halted) return;
    try {
      const { store, sessionId, uploader, maxChunkBytes } = this.#sink;
      const payload = new Uint8Array(await blob.arrayBuffer());
      const max = Math.min(maxChunkBytes, uploader?.maxChunkBytes ?? Infinity);
      if (payload.length > max) {
        return this.#hooks.onFatal(
          new SpoolError("chunk_too_large", `Chunk ${index} is ${payload.length} bytes, over the server's limit of ${max}: use a smaller timeslice.`),
        );
      }
      const frame = encodeFrame(index, flags, payload);
      let pinned = false;
      try {
        await store.putChunk(sessionId, index, frame);
      } catch (err) {
        pinned = true; // still sent, from memory; only reload-safety is lost
        this.#hooks.onStorageFailed(err);
      }
      uploader?.chunkStored(index, frame, pinned);
    } catch (err) {
      this.#hooks.onFatal(new SpoolError("capture_failed", `Chunk ${index} could not be read: ${err?.message ?? err}`, { cause: err }));
    }
  }

  #onMediaRecorderError(mr, ev) {
    if (mr !== this.#mr || !this.#live) return;
    this.#hooks.onError("recorder_error", `MediaRecorder failed: ${ev.error?.message ?? "unknown error"}`);
    if (!this.#stream.getAudioTracks().some((t) => t.readyState === "live")) return;
    // The input is still there: go on with a fresh MediaRecorder (its first chunk is flagged).
    try {
      this.#newMediaRecorder().start(this.#opts.timeslice);
    } catch (err) {
      this.#hooks.onError("input_ended", `Recording could not continue: ${err.message}. Call stop() to keep what was recorded.`);
    }
  }

  #onMediaRecorderStop(mr) {
    if (mr !== this.#mr || !this.#live) return;
    this.#inputEnded();
  }

  async #endMediaRecorder() {
    await this.#stopRecorder(this.#mr);
  }

  /** Stops `mr`; resolves after its last `dataavailable` (which comes before `stop`). */
  async #stopRecorder(mr) {
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

  /** Stops the mic tracks opened here (never those of a stream passed in). */
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
    this.#pageListeners.push(
      () => window.removeEventListener("pagehide", flush),
      () => document.removeEventListener("visibilitychange", onVisibility),
    );
  }
}
