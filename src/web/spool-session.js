/**
 * @module spool-session
 * The session of a live recording, on both ends: created on the server (or by the page's own backend),
 * locked against other tabs, recorded in the local store before any chunk, and uploaded; in the end
 * either kept (local copy dropped, listed as recent) or discarded everywhere.
 */

import { SpoolError, createSession, deleteSession } from "./spool-http.js";
import { addRecent, openStore, recentEntry, sessionLockName, tryLock } from "./spool-store.js";
import { Uploader, uploadTunables } from "./spool-uploader.js";

/**
 * @typedef {object} LiveSessionHooks
 * @property {() => void} onChange the upload's progress or connection changed
 * @property {(err: SpoolError) => void} onFatal the upload failed for good
 * @property {(err: unknown) => void} onStorageFailed the local store refused a write
 */

export class LiveSession {
  #server;
  #opts;
  #hooks;
  #releaseLock = null;
  /** @type {{ id: string, token: string } | null} frozen, set as soon as the server has created it */
  session = null;
  createdAt = 0;
  /** The server's limit as the creation answer gave it. */
  maxChunkBytes = Infinity;
  /** The local store, once opened. */
  store = null;
  /** @type {Uploader | null} */
  uploader = null;

  /**
   * @param {string} server normalized base URL
   * @param {object} opts Recorder options with defaults applied
   * @param {LiveSessionHooks} hooks
   */
  constructor(server, opts, hooks) {
    this.#server = server;
    this.#opts = opts;
    this.#hooks = hooks;
  }

  /**
   * Creates the session, locks it, stores its record and starts uploading.
   * @param {string} mimeType the container MediaRecorder produces
   */
  async open(mimeType) {
    const { metadata, dbName, durability } = this.#opts;
    const created = await this.#create({ mimeType, metadata });
    const { id, token } = created;
    this.session = Object.freeze({ id, token });
    this.maxChunkBytes = created.max_chunk_bytes ?? Infinity;
    this.createdAt = Date.now();
    // Locked before it is stored, so resumePending in another tab never sees it unlocked.
    this.#releaseLock = (await tryLock(sessionLockName(dbName, id))) ?? (() => {});
    this.store = await openStore(dbName, durability);
    const record = {
      id,
      token,
      server: this.#server,
      wsUrl: created.ws_url,
      mimeType,
      metadata,
      maxChunkBytes: this.maxChunkBytes,
      captured: 0,
      finished: false,
      expected: null,
      createdAt: this.createdAt,
    };
    await this.store.putSession(record).catch(this.#hooks.onStorageFailed);
    const { onChange, onFatal } = this.#hooks;
    this.uploader = new Uploader({ session: record, store: this.store, ...uploadTunables(this.#opts), hooks: { onChange, onFatal } });
    this.uploader.start();
  }

  async #create(request) {
    // Where the server needs an API key, the page's own backend creates the session (the key stays there).
    const created = this.#opts.createSession
      ? await this.#opts.createSession(request)
      : await createSession(this.#server, { ...request, apiKey: this.#opts.apiKey });
    const { id, token } = created ?? {};
    if (typeof id !== "string" || typeof token !== "string") {
      throw new SpoolError("bad_session", "createSession must resolve with the server's {id, token, ws_url, max_chunk_bytes}.");
    }
    return created;
  }

  /**
   * Declares the final count, locally first (so resumePending declares the same) and then to the server.
   * @param {number} n
   * @returns {Promise<object>} the recording
   */
  async finish(n) {
    await this.store.updateSession(this.session.id, { finished: true, expected: n }).catch(this.#hooks.onStorageFailed);
    return this.uploader.finish(n);
  }

  /** The recording is safe on the server: drops the local copy and adds it to the recent list. */
  async keep(recording) {
    const { id, token } = this.session;
    await this.store.deleteSession(id).catch((err) => console.warn("spool: could not clean up local storage", err));
    addRecent(this.#opts.dbName, recentEntry({ id, token, server: this.#server, createdAt: this.createdAt }, recording));
  }

  /** Stops uploading and deletes whatever exists of the session, here and on the server. */
  async discard() {
    this.uploader?.abort();
    if (this.session) {
      const { id, token } = this.session;
      await this.store?.deleteSession(id).catch(() => {});
      deleteSession(this.#server, id, token);
    }
    this.releaseLock();
  }

  /** Lets other tabs (resumePending) take the session. */
  releaseLock() {
    this.#releaseLock?.();
  }
}
