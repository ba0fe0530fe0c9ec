/**
 * @module spool-resume
 * `Recorder.resumePending`: after a reload or a crash, finish every session an earlier page of this
 * browser left unfinished — reconnect, resend what the server lacks, declare the count, wait for the
 * recording, then forget the local copy.
 */

import { SpoolError, deleteSession } from "./spool-http.js";
import { addRecent, openStore, recentEntry, sessionLockName, tryLock } from "./spool-store.js";
import { Uploader, uploadTunables } from "./spool-uploader.js";

/**
 * @param {object} opts Recorder options with defaults applied and `server` normalized, plus
 *   `signal` and `onProgress` (see Recorder.resumePending)
 * @returns {Promise<object[]>} one recording per session finished
 */
export async function resumePending(opts) {
  const store = await openStore(opts.dbName, opts.durability);
  const sessions = (await store.listSessions())
    .filter((s) => s.server === opts.server)
    .sort((a, b) => (a.createdAt ?? 0) - (b.createdAt ?? 0));
  const results = await Promise.all(sessions.map((s) => resumeSession(s.id, store, opts)));
  return results.filter(Boolean);
}

/** Finishes one stored session; resolves with its recording, or null when skipped or dropped. */
async function resumeSession(id, store, opts) {
  const release = await lockPatiently(sessionLockName(opts.dbName, id));
  if (!release) {
    console.info(`spool: session ${id} is being recorded or resumed in another tab; left alone`);
    return null;
  }
  try {
    const record = await store.getSession(id);
    if (!record) return null; // finished by its owner while we waited for the lock
    const n = (record.finished ? record.expected : record.captured) ?? 0;
    if (n === 0) {
      // Nothing was ever captured: nothing to save.
      await deleteSession(record.server, id, record.token);
      await store.deleteSession(id);
      return null;
    }
    // Fixed from now on, so a second interrupted attempt declares the same N.
    if (!record.finished) await store.updateSession(id, { finished: true, expected: n }).catch(() => {});
    const recording = await uploadAndFinish(record, n, store, opts);
    if (recording.complete === false) {
      console.warn(`spool: the server finalized session ${id} without chunks ${JSON.stringify(recording.missing ?? [])} of ${n}.`);
    }
    await store.deleteSession(id).catch((err) => console.warn("spool: could not clean up local storage", err));
    addRecent(opts.dbName, recentEntry(record, recording));
    return recording;
  } catch (err) {
    const gone = err.closeCode === 4404 || err.status === 404 || err.code === "unknown_session" || err.code === "session_failed";
    console.warn(`spool: could not resume session ${id}: ${err.message}${gone ? " Dropped from local storage." : " Kept for a later try."}`);
    if (gone) await store.deleteSession(id).catch(() => {});
    return null;
  } finally {
    release();
  }
}

function uploadAndFinish(record, n, store, opts) {
  const report = () =>
    opts.onProgress?.({
      id: record.id,
      state: uploader.done ? "done" : uploader.finishSent ? "finishing" : "uploading",
      captured: n,
      acked: uploader.committed,
      pending: Math.max(0, n - uploader.committed),
      connection: uploader.connection,
    });
  const uploader = new Uploader({ session: record, store, available: n, ...uploadTunables(opts), hooks: { onChange: report } });
  const { signal } = opts;
  const abort = () => uploader.abort(new SpoolError("aborted", "resumePending was aborted.", { fatal: false }));
  if (signal?.aborted) abort();
  signal?.addEventListener?.("abort", abort, { once: true });
  uploader.start();
  return uploader.finish(n).finally(() => signal?.removeEventListener?.("abort", abort));
}

/** A reloaded page's previous document may hold a session's lock for a moment after it is gone. */
async function lockPatiently(name, tries = 5) {
  for (let i = 0; ; i++) {
    const release = await tryLock(name);
    if (release || i + 1 >= tries) return release;
    await new Promise((resolve) => setTimeout(resolve, 400));
  }
}
