/**
 * @module spool-store
 * Local durability: every chunk is written to IndexedDB before it is sent and deleted only once the
 * server has acknowledged it, so a reload, a crash or a long outage loses nothing.
 *
 * Layout of the database (default name "spool", version 1):
 * - `sessions`, keyPath `id`: `{ id, token, server, wsUrl, mimeType, metadata, maxChunkBytes,
 *   captured, finished, expected, createdAt }`. `captured` is the number of chunks stored so far
 *   (indexes are dense), updated in the same transaction as each chunk; `finished`/`expected` are
 *   set once the final count N is known.
 * - `chunks`, keyPath `[sessionId, index]`: `{ sessionId, index, frame }`, `frame` being the complete
 *   wire frame (header + payload) as an ArrayBuffer — ArrayBuffers, not Blobs, because older Safari
 *   cannot store Blobs in IndexedDB.
 *
 * Also here: the "recent recordings" list (localStorage) and per-session locks across tabs.
 */

const DB_VERSION = 1;
const SESSIONS = "sessions";
const CHUNKS = "chunks";
const RECENT_LIMIT = 20;

/** @type {Map<string, Promise<IdbStore | MemoryStore>>} one connection per database name per page */
const opened = new Map();

/**
 * Opens (once per page) the store named `name`, falling back to memory when IndexedDB is unavailable
 * (some private modes): recording still works, only reload-safety is lost.
 * @param {string} [name]
 * @param {"strict" | "relaxed" | "default"} [durability] for chunk writes
 */
export function openStore(name = "spool", durability = "strict") {
  if (!opened.has(name)) {
    opened.set(
      name,
      openDb(name).then(
        (db) => new IdbStore(db, durability),
        (err) => {
          console.warn(`spool: IndexedDB "${name}" unavailable (${err?.message ?? err}); chunks stay in memory only`);
          return new MemoryStore();
        },
      ),
    );
  }
  return opened.get(name);
}

function openDb(name) {
  return new Promise((resolve, reject) => {
    if (typeof indexedDB === "undefined") throw new Error("no indexedDB in this context");
    const req = indexedDB.open(name, DB_VERSION);
    req.onupgradeneeded = () => {
      const db = req.result;
      if (!db.objectStoreNames.contains(SESSIONS)) db.createObjectStore(SESSIONS, { keyPath: "id" });
      if (!db.objectStoreNames.contains(CHUNKS)) db.createObjectStore(CHUNKS, { keyPath: ["sessionId", "index"] });
    };
    req.onsuccess = () => {
      const db = req.result;
      // Let a newer version of this page upgrade the schema instead of being blocked by us.
      db.onversionchange = () => {
        db.close();
        opened.delete(name);
      };
      resolve(db);
    };
    req.onerror = () => reject(req.error);
  });
}

/** Runs `body(tx, setResult)` in one transaction; resolves with the result once it has committed. */
function transact(db, stores, mode, body, durability) {
  return new Promise((resolve, reject) => {
    const tx = db.transaction(stores, mode, durability ? { durability } : undefined);
    let result;
    tx.oncomplete = () => resolve(result);
    tx.onabort = () => reject(tx.error ?? new DOMException("transaction aborted", "AbortError"));
    body(tx, (value) => {
      result = value;
    });
  });
}

const chunkRange = (sessionId, from, to = Infinity) =>
  IDBKeyRange.bound([sessionId, from], [sessionId, to], false, to !== Infinity);

/** IndexedDB-backed store. */
class IdbStore {
  #db;
  #durability;

  constructor(db, durability) {
    this.#db = db;
    this.#durability = durability;
  }

  putSession(session) {
    return transact(this.#db, [SESSIONS], "readwrite", (tx) => tx.objectStore(SESSIONS).put(session), this.#durability);
  }

  getSession(id) {
    return transact(this.#db, [SESSIONS], "readonly", (tx, set) => {
      const req = tx.objectStore(SESSIONS).get(id);
      req.onsuccess = () => set(req.result ?? null);
    });
  }

  listSessions() {
    return transact(this.#db, [SESSIONS], "readonly", (tx, set) => {
      const req = tx.objectStore(SESSIONS).getAll();
      req.onsuccess = () => set(req.result);
    });
  }

  /** Merges `patch` into the stored session, if it is still there. */
  updateSession(id, patch) {
    return transact(
      this.#db,
      [SESSIONS],
      "readwrite",
      (tx) => {
        const sessions = tx.objectStore(SESSIONS);
        const req = sessions.get(id);
        req.onsuccess = () => req.result && sessions.put({ ...req.result, ...patch });
      },
      this.#durability,
    );
  }

  /**
   * Stores chunk `index` and raises the session's `captured` count in the same transaction, so the
   * count never claims a chunk that is not there.
   */
  putChunk(sessionId, index, frame) {
    return transact(
      this.#db,
      [SESSIONS, CHUNKS],
      "readwrite",
      (tx) => {
        tx.objectStore(CHUNKS).put({ sessionId, index, frame });
        const sessions = tx.objectStore(SESSIONS);
        const req = sessions.get(sessionId);
        req.onsuccess = () => {
          const session = req.result;
          if (session && (session.captured ?? 0) < index + 1) sessions.put({ ...session, captured: index + 1 });
        };
      },
      this.#durability,
    );
  }

  /** Up to `limit` stored chunks from index `from` on, in index order: `[{ index, frame }]`. */
  getChunks(sessionId, from, limit) {
    return transact(this.#db, [CHUNKS], "readonly", (tx, set) => {
      const req = tx.objectStore(CHUNKS).getAll(chunkRange(sessionId, from), limit);
      req.onsuccess = () => set(req.result.map(({ index, frame }) => ({ index, frame })));
    });
  }

  /** Forgets every chunk below `committed` (the server has them durably). */
  deleteChunksBelow(sessionId, committed) {
    if (committed <= 0) return Promise.resolve();
    return transact(this.#db, [CHUNKS], "readwrite", (tx) => tx.objectStore(CHUNKS).delete(chunkRange(sessionId, 0, committed)), "relaxed");
  }

  /** Removes a session and all its chunks. */
  deleteSession(id) {
    return transact(this.#db, [SESSIONS, CHUNKS], "readwrite", (tx) => {
      tx.objectStore(SESSIONS).delete(id);
      tx.objectStore(CHUNKS).delete(chunkRange(id, 0));
    });
  }
}

/** Same interface, in memory: the fallback when IndexedDB cannot be opened. */
class MemoryStore {
  #sessions = new Map();
  #chunks = new Map(); // sessionId -> Map(index -> frame)

  async putSession(session) {
    this.#sessions.set(session.id, { ...session });
  }
  async getSession(id) {
    return this.#sessions.get(id) ?? null;
  }
  async listSessions() {
    return [...this.#sessions.values()];
  }
  async updateSession(id, patch) {
    const session = this.#sessions.get(id);
    if (session) this.#sessions.set(id, { ...session, ...patch });
  }
  async putChunk(sessionId, index, frame) {
    if (!this.#chunks.has(sessionId)) this.#chunks.set(sessionId, new Map());
    this.#chunks.get(sessionId).set(index, frame);
    const session = this.#sessions.get(sessionId);
    if (session && (session.captured ?? 0) < index + 1) session.captured = index + 1;
  }
  async getChunks(sessionId, from, limit) {
    const chunks = this.#chunks.get(sessionId) ?? new Map();
    return [...chunks.keys()]
      .filter((i) => i >= from)
      .sort((a, b) => a - b)
      .slice(0, limit)
      .map((index) => ({ index, frame: chunks.get(index) }));
  }
  async deleteChunksBelow(sessionId, committed) {
    const chunks = this.#chunks.get(sessionId);
    if (chunks) for (const i of [...chunks.keys()]) if (i < committed) chunks.delete(i);
  }
  async deleteSession(id) {
    this.#sessions.delete(id);
    this.#chunks.delete(id);
  }
}

// ---- Recent recordings (for the demo page), in localStorage --------------------------------------

const recentKey = (dbName) => `${dbName}:recent`;

/**
 * This browser's recent recordings, newest first.
 * @returns {Array<{ id: string, token: string, server: string, createdAt: number, finishedAt: number,
 *   url: string, bytes: number, duration_ms: number | null, mime_type: string, complete: boolean }>}
 */
export function loadRecent(dbName = "spool") {
  try {
    const list = JSON.parse(localStorage.getItem(recentKey(dbName)) ?? "[]");
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

/** The recent-list entry for a finished session: the recording's facts plus what is needed to play it. */
export function recentEntry(session, recording) {
  const path = recording?.url ?? `/v1/sessions/${encodeURIComponent(session.id)}/recording`;
  return {
    id: session.id,
    token: session.token,
    server: session.server,
    createdAt: session.createdAt ?? null,
    finishedAt: Date.now(),
    url: new URL(path, `${session.server}/`).href,
    bytes: recording?.bytes ?? null,
    duration_ms: recording?.duration_ms ?? null,
    mime_type: recording?.mime_type ?? session.mimeType ?? "",
    complete: recording?.complete ?? null,
  };
}

/** Adds (or replaces) one entry, keeping the newest RECENT_LIMIT. */
export function addRecent(dbName, entry) {
  try {
    const list = [entry, ...loadRecent(dbName).filter((r) => r.id !== entry.id)].slice(0, RECENT_LIMIT);
    localStorage.setItem(recentKey(dbName), JSON.stringify(list));
  } catch {
    // Storage full or disabled: the list is a convenience, the recording itself is on the server.
  }
}

// ---- Session locks ---------------------------------------------------------------------------------

/** The name of the lock that whoever is recording or resuming a session holds. */
export const sessionLockName = (dbName, id) => `spool:${dbName}:${id}`;

/** Fallback for browsers without the Web Locks API: guards this page only. */
const heldHere = new Set();

/**
 * Takes an exclusive, cross-tab lock if nobody holds it (Web Locks API). A live Recorder holds the lock
 * of its session, so `resumePending` in another tab never steals a recording in progress.
 * @param {string} name
 * @returns {Promise<(() => void) | null>} the release function, or null if the lock is taken
 */
export function tryLock(name) {
  if (heldHere.has(name)) return Promise.resolve(null);
  const locks = typeof navigator === "object" ? navigator.locks : undefined;
  if (!locks) {
    heldHere.add(name);
    return Promise.resolve(() => heldHere.delete(name));
  }
  return new Promise((resolve) => {
    locks
      .request(name, { ifAvailable: true }, (lock) => {
        if (!lock) return resolve(null);
        heldHere.add(name);
        // The lock is held until this promise settles, i.e. until release() is called.
        return new Promise((release) =>
          resolve(() => {
            heldHere.delete(name);
            release();
          }),
        );
      })
      .catch(() => {
        // Locks refused (opaque origin, say): guard this page at least.
        heldHere.add(name);
        resolve(() => heldHere.delete(name));
      });
  });
}
