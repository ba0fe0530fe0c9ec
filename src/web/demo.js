// Spool demo recorder page: one Recorder per recording, live counters, a level meter, the result,
// and this browser's recent recordings. `window.spoolDemo` exposes the state to automated tests.

import { Recorder, describeStartError } from "/client/spool.js";

const $ = (id) => document.getElementById(id);
const el = {
  message: $("message"),
  record: $("record"),
  stop: $("stop"),
  elapsed: $("elapsed"),
  meter: $("meter"),
  level: $("level"),
  state: $("state"),
  connection: $("connection"),
  captured: $("captured"),
  acked: $("acked"),
  pending: $("pending"),
  bytes: $("bytes"),
  result: $("result"),
  player: $("player"),
  resultInfo: $("result-info"),
  download: $("download"),
  resumed: $("resumed"),
  resumedInfo: $("resumed-info"),
  recent: $("recent"),
  recentEmpty: $("recent-empty"),
};

/** For automated tests: the live Recorder, the last recording, what resumePending recovered. */
const demo = {
  recorder: null,
  lastRecording: null,
  lastSession: null,
  resumed: null,
  resumePromise: null,
  recent: () => Recorder.recentRecordings({ server: location.origin }),
};
window.spoolDemo = demo;

const STATE_LABELS = {
  idle: "Ready to record",
  recording: "Recording",
  stopping: "Stopping…",
  finishing: "Saving…",
  ready: "Saved",
  failed: "Failed",
};

const CONNECTION_LABELS = {
  connecting: "Connecting…",
  open: "Connected",
  closed: "Reconnecting…",
  offline: "Offline — audio is kept on this device",
};

// ---- formatting -----------------------------------------------------------------------------------

function formatBytes(n) {
  if (n == null) return "?";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(2)} MB`;
}

function formatDuration(ms) {
  if (ms == null || !Number.isFinite(ms)) return "unknown length";
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}

function extensionFor(mime = "") {
  if (mime.includes("webm")) return "webm";
  if (mime.includes("ogg")) return "ogg";
  if (mime.includes("mp4")) return "m4a";
  return "bin";
}

// ---- messages -------------------------------------------------------------------------------------

function showMessage(text, kind = "error") {
  el.message.textContent = text;
  el.message.className = `message message-${kind}`;
  el.message.hidden = false;
}

function clearMessage() {
  el.message.hidden = true;
  el.message.textContent = "";
}

/** What to tell a person about an error from start(), stop() or an `error` event. */
function explain(err) {
  // `error` details and SpoolErrors carry a string code; for the rest (DOMExceptions from the mic,
  // whose legacy `code` is a number) the client's own mapping gives one.
  const { code, message } = typeof err?.code === "string" ? err : describeStartError(err);
  switch (code) {
    case "mic_denied":
      return "Microphone access was refused. To record, allow the microphone for this site (usually via the icon in the address bar), then press Record again.";
    case "mic_not_found":
      return "No microphone was found. Connect one and press Record again.";
    case "mic_unavailable":
      return "The microphone could not be opened. Another app may be using it.";
    case "unsupported":
      return unsupportedReason() ?? "This browser cannot record audio in a format Spool accepts.";
    case "network":
      return "Could not reach the Spool server. Check your connection and press Record again.";
    default:
      return message ?? String(err);
  }
}

function unsupportedReason() {
  if (!window.isSecureContext) return "Recording needs a secure page: open this site over HTTPS (or on localhost).";
  if (typeof MediaRecorder === "undefined") {
    return "This browser cannot record audio (it has no MediaRecorder). Try a current Chrome, Edge, Firefox or Safari.";
  }
  if (!navigator.mediaDevices?.getUserMedia) return "This browser does not give web pages access to the microphone.";
  return null;
}

// ---- live view ------------------------------------------------------------------------------------

function renderProgress(p) {
  el.state.textContent = STATE_LABELS[p.state] ?? p.state;
  el.captured.textContent = p.captured;
  el.acked.textContent = p.acked;
  el.pending.textContent = p.pending;
  el.bytes.textContent = formatBytes(p.bytes);
  const live = p.state !== "ready" && p.state !== "failed";
  el.connection.dataset.connection = live ? p.connection : "none";
  el.connection.textContent = live ? CONNECTION_LABELS[p.connection] ?? p.connection : "";
}

let clockTimer = null;

function startClock() {
  const started = performance.now();
  const tick = () => {
    el.elapsed.textContent = formatDuration(performance.now() - started);
  };
  tick();
  clockTimer = setInterval(tick, 250);
}

function stopClock() {
  clearInterval(clockTimer);
  clockTimer = null;
}

/** Input level from an AnalyserNode on the recorded stream. */
const meter = {
  context: null,
  frame: 0,

  /** Created inside the click so that autoplay rules let it run. */
  prepare() {
    const Context = window.AudioContext ?? window.webkitAudioContext;
    if (!Context) return;
    try {
      this.context = new Context();
    } catch {
      this.context = null;
    }
  },

  start(stream) {
    const ctx = this.context;
    if (!ctx || !stream) return;
    ctx.resume?.()?.catch?.(() => {});
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 1024;
    ctx.createMediaStreamSource(stream).connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    let shown = 0;
    const draw = () => {
      analyser.getFloatTimeDomainData(samples);
      let sum = 0;
      for (const s of samples) sum += s * s;
      const db = 20 * Math.log10(Math.sqrt(sum / samples.length) || 1e-8);
      const level = Math.max(0, Math.min(100, ((db + 60) / 60) * 100)); // -60 dBFS .. 0 dBFS
      shown = level > shown ? level : shown * 0.9 + level * 0.1; // fast attack, slow release
      el.level.style.width = `${shown.toFixed(1)}%`;
      el.meter.setAttribute("aria-valuenow", String(Math.round(shown)));
      this.frame = requestAnimationFrame(draw);
    };
    draw();
  },

  stop() {
    cancelAnimationFrame(this.frame);
    this.context?.close?.().catch(() => {});
    this.context = null;
    el.level.style.width = "0";
    el.meter.setAttribute("aria-valuenow", "0");
  },
};

// ---- recording ------------------------------------------------------------------------------------

async function record() {
  clearMessage();
  el.record.disabled = true;
  el.result.hidden = true;
  el.state.textContent = "Waiting for the microphone…";
  meter.prepare();

  const rec = new Recorder({
    server: location.origin,
    timeslice: 250,
    metadata: { source: "demo", userAgent: navigator.userAgent },
  });
  demo.recorder = rec;
  rec.addEventListener("progress", (e) => renderProgress(e.detail));
  rec.addEventListener("error", (e) => onRecorderError(rec, e.detail));

  try {
    await rec.start();
  } catch (err) {
    meter.stop();
    showMessage(explain(err));
    el.state.textContent = STATE_LABELS.idle;
    el.record.disabled = false;
    return;
  }
  demo.lastSession = rec.session;
  document.body.classList.add("recording");
  startClock();
  el.stop.disabled = false;
  el.stop.focus();
  // The meter is decoration: if this browser cannot analyse the stream, record without it.
  try {
    meter.start(rec.stream);
  } catch (err) {
    console.warn("spool demo: no level meter", err);
  }
}

function onRecorderError(rec, detail) {
  if (rec !== demo.recorder) return;
  if (detail.code === "input_ended") {
    showMessage("The microphone stopped. Saving what was recorded.", "warn");
    stop();
  } else if (detail.code === "storage_failed") {
    showMessage("This browser could not keep a local copy of the audio. Recording goes on, but reloading the page now could lose the last seconds.", "warn");
  } else if (detail.fatal && rec.state !== "idle") {
    showMessage(`Recording stopped: ${explain(detail)}`);
  }
}

async function stop() {
  const rec = demo.recorder;
  if (!rec || el.stop.disabled) return;
  el.stop.disabled = true;
  stopClock();
  meter.stop();
  document.body.classList.remove("recording");
  try {
    const recording = await rec.stop();
    demo.lastRecording = recording;
    showResult(recording, rec.session);
  } catch (err) {
    showMessage(`The recording could not be saved: ${explain(err)}`);
  } finally {
    el.record.disabled = false;
    renderRecent();
  }
}

function showResult(recording, session) {
  const src = Recorder.playbackUrl(recording, session.token);
  el.player.src = src;
  el.download.href = src;
  el.download.download = `spool-${session.id}.${extensionFor(recording.mime_type)}`;
  const incomplete = recording.complete === false ? " — incomplete, some audio is missing" : "";
  el.resultInfo.textContent = `${formatBytes(recording.bytes)} · ${formatDuration(recording.duration_ms)}${incomplete}`;
  el.result.hidden = false;
}

// ---- recent recordings and recovery ---------------------------------------------------------------

function renderRecent() {
  const list = demo.recent();
  el.recent.replaceChildren(...list.map(recentItem));
  el.recentEmpty.hidden = list.length > 0;
}

function recentItem(entry) {
  const li = document.createElement("li");
  const src = Recorder.playbackUrl(entry, entry.token);
  const when = new Date(entry.createdAt ?? entry.finishedAt).toLocaleString();
  li.innerHTML = `
    <div class="row">
      <div>
        <div class="when"></div>
        <div class="meta"></div>
      </div>
      <div class="actions">
        <button type="button" class="btn btn-secondary play">Play</button>
        <a class="btn btn-secondary" download>Download</a>
      </div>
    </div>`;
  li.querySelector(".when").textContent = when;
  li.querySelector(".meta").textContent = `${formatDuration(entry.duration_ms)} · ${formatBytes(entry.bytes)}`;
  if (entry.complete === false) {
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = "incomplete";
    li.querySelector(".meta").append(badge);
  }
  const link = li.querySelector("a");
  link.href = src;
  link.download = `spool-${entry.id}.${extensionFor(entry.mime_type)}`;
  // Players are created on demand: a dozen <audio preload> elements would each fetch their file.
  li.querySelector(".play").addEventListener("click", (e) => {
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.src = src;
    e.currentTarget.disabled = true;
    li.append(audio);
    audio.play().catch(() => {});
  });
  return li;
}

async function resumeLeftovers() {
  const waiting = new Map();
  const onProgress = (p) => {
    waiting.set(p.id, p);
    const open = [...waiting.values()].filter((x) => x.state !== "done");
    if (open.length === 0) return;
    const pending = open.reduce((sum, x) => sum + x.pending, 0);
    el.resumedInfo.textContent = `Finishing ${open.length} recording${open.length > 1 ? "s" : ""} left from last time` +
      (pending ? ` (${pending} chunks to upload)…` : "…");
    el.resumed.hidden = false;
  };
  demo.resumePromise = Recorder.resumePending({ server: location.origin, onProgress });
  try {
    const recordings = await demo.resumePromise;
    demo.resumed = recordings;
    if (recordings.length > 0) {
      el.resumedInfo.textContent = `${recordings.length} recording${recordings.length > 1 ? "s" : ""} interrupted last time ${recordings.length > 1 ? "were" : "was"} saved: ` +
        recordings.map((r) => `${formatDuration(r.duration_ms)} (${formatBytes(r.bytes)})`).join(", ") + ". See the list below.";
      el.resumed.hidden = false;
    } else {
      el.resumed.hidden = true;
    }
  } catch (err) {
    demo.resumed = [];
    el.resumedInfo.textContent = `Could not finish earlier recordings: ${explain(err)}`;
    el.resumed.hidden = false;
  }
  renderRecent();
}

// ---- start ----------------------------------------------------------------------------------------

function init() {
  el.record.addEventListener("click", record);
  el.stop.addEventListener("click", stop);
  renderRecent();
  if (!Recorder.isSupported()) {
    el.record.disabled = true;
    showMessage(unsupportedReason() ?? "This browser cannot record audio.");
  }
  resumeLeftovers();
}

init();
