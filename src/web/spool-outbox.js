/**
 * @module spool-outbox
 * One session's chunks on their way out: which are stored locally, which the server holds, and how many
 * may be in flight. Recent frames are also kept in memory, so a healthy upload never reads IndexedDB
 * back; a frame the store refused is kept in memory only, until the server holds it.
 */

export class Outbox {
  #store;
  #sessionId;
  #opts; // { window, cacheSize }
  #available; // chunks 0..available-1 are stored locally (or were, and are acked)
  #committed = 0; // the server has every index below this durably
  #window; // effective window; halved on 4429, regrown as acks come
  #windowCredit = 0;
  #cache = new Map(); // index -> frame, most recent chunks
  #pinned = new Map(); // index -> frame that could not be stored locally: kept until acked

  /**
   * @param {object} store the local store holding the session's chunks
   * @param {string} sessionId
   * @param {number} available chunks 0..available-1 are stored already
   * @param {{ window: number, cacheSize: number }} opts
   */
  constructor(store, sessionId, available, opts) {
    this.#store = store;
    this.#sessionId = sessionId;
    this.#available = available;
    this.#opts = opts;
    this.#window = opts.window;
  }

  /** Chunks stored locally so far. */
  get available() {
    return this.#available;
  }
  /** Chunks the server holds durably (its cumulative ack). */
  get committed() {
    return this.#committed;
  }

  /**
   * Takes chunk `index` if it is the next one (`pinned`: it is only in memory).
   * @returns {boolean} whether it was taken
   */
  add(index, frame, pinned) {
    if (index !== this.#available) return false;
    this.#available = index + 1;
    (pinned ? this.#pinned : this.#cache).set(index, frame);
    while (this.#cache.size > this.#opts.cacheSize) this.#cache.delete(this.#cache.keys().next().value);
    return true;
  }

  /**
   * Raises `committed`, forgets what it covers (memory and IndexedDB), regrows the window.
   * @returns {boolean} whether it moved
   */
  advance(committed) {
    if (committed <= this.#committed) return false;
    const acked = committed - this.#committed;
    this.#committed = committed;
    for (const map of [this.#cache, this.#pinned]) for (const i of map.keys()) if (i < committed) map.delete(i);
    if (this.#window < this.#opts.window && (this.#windowCredit += acked) >= this.#window) {
      this.#window += 1;
      this.#windowCredit = 0;
    }
    this.#store.deleteChunksBelow(this.#sessionId, committed).catch((err) => console.warn("spool: could not delete acked chunks", err));
    return true;
  }

  /** How many chunks from `next` on the window lets out now (0 or less: none). */
  room(next) {
    return this.#committed + this.#window - next;
  }

  /** The server is overloaded: halve the window (acks regrow it). */
  shrink() {
    this.#window = Math.max(1, Math.floor(this.#window / 2));
  }

  /** Contiguous frames from `from`: from memory when possible, else read back from the store. */
  async frames(from, count) {
    const frames = [];
    for (let i = from; i < from + count; i++) {
      const frame = this.#cache.get(i) ?? this.#pinned.get(i);
      if (!frame) break;
      frames.push({ index: i, frame });
    }
    if (frames.length > 0) return frames;
    return this.#store.getChunks(this.#sessionId, from, count);
  }

  /** Lets go of the frames held in memory. */
  clear() {
    this.#cache.clear();
    this.#pinned.clear();
  }
}
