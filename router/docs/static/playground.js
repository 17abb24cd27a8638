// The playground: one prompt sent to /generate_stream and /generate at the same time.
// Each panel shows its answer as it arrives, with time to first token, tokens/s, total
// time, and a token-arrival chart whose axes both panels share, so that the streamed
// answer rising token by token next to the other one jumping at the end is seen at once.
"use strict";

const KEY_STORAGE = "sluice-api-key";
const $ = (id) => document.getElementById(id);

// ChatML, the template of SmolLM2 (and Qwen, ...): the user turn, then an open assistant turn.
const chatml = (prompt) => `<|im_start|>user\n${prompt}<|im_end|>\n<|im_start|>assistant\n`;

const formatMs = (ms) => (ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`);

class Panel {
  constructor(root) {
    this.root = root;
    this.output = root.querySelector(".output");
    this.error = root.querySelector(".error");
    this.status = root.querySelector(".status");
    this.canvas = root.querySelector("canvas");
    this.scale = root.querySelector(".scale");
    this.figures = Object.fromEntries(
      ["ttft", "rate", "total", "count"].map((name) => [name, root.querySelector(`.${name}`)]));
    this.reset(null);
  }

  reset(startedAt) {
    this.startedAt = startedAt;
    this.endedAt = null;
    this.arrivals = []; // ms after the request was sent, one entry per token
    this.output.textContent = "";
    this.error.textContent = "";
    this.setState(startedAt === null ? "idle" : "running", startedAt === null ? "idle" : "waiting…");
  }

  get running() { return this.root.dataset.state === "running"; }

  elapsed(now) { return this.startedAt === null ? 0 : (this.endedAt ?? now) - this.startedAt; }

  receive(text, numTokens, now) {
    for (let i = 0; i < numTokens; i++) this.arrivals.push(now - this.startedAt);
    this.output.textContent += text;
    this.output.scrollTop = this.output.scrollHeight;
    this.setState("running", "streaming");
  }

  finish(text, finishReason, now) {
    this.output.textContent = text; // the server's final text, exactly
    this.endedAt = now;
    this.setState("done", finishReason ? `done · ${finishReason}` : "done");
  }

  fail(message, state, now) {
    this.endedAt = now;
    this.error.textContent = message;
    this.setState(state, state);
  }

  setState(state, label) {
    this.root.dataset.state = state;
    this.status.textContent = label;
  }

  render(now, maxMs, maxTokens) {
    const started = this.startedAt !== null;
    const elapsed = this.elapsed(now);
    const count = this.arrivals.length;
    this.figures.ttft.textContent = count ? formatMs(this.arrivals[0]) : "–";
    this.figures.rate.textContent = count && elapsed > 0 ? (count / (elapsed / 1000)).toFixed(1) : "–";
    this.figures.total.textContent = started ? formatMs(elapsed) : "–";
    this.figures.count.textContent = started ? String(count) : "–";
    this.scale.textContent = started ? `0 – ${formatMs(maxMs)}` : "";
    drawArrivals(this.canvas, this.arrivals, maxMs, maxTokens, started ? elapsed : 0);
  }
}

// Tokens received so far against time, as a step line, with a tick under each token.
function drawArrivals(canvas, arrivals, maxMs, maxTokens, elapsed) {
  const ratio = window.devicePixelRatio || 1;
  const width = Math.round(canvas.clientWidth * ratio);
  const height = Math.round(canvas.clientHeight * ratio);
  if (canvas.width !== width || canvas.height !== height) Object.assign(canvas, {width, height});
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, width, height);
  const color = getComputedStyle(canvas.closest(".panel")).borderTopColor;
  const pad = 4 * ratio, tick = 5 * ratio;
  const x = (ms) => pad + (ms / maxMs) * (width - 2 * pad);
  const y = (n) => height - pad - tick - (n / maxTokens) * (height - 2 * pad - tick);

  ctx.beginPath();
  ctx.moveTo(x(0), y(0));
  arrivals.forEach((ms, i) => { ctx.lineTo(x(ms), y(i)); ctx.lineTo(x(ms), y(i + 1)); });
  ctx.lineTo(x(elapsed), y(arrivals.length));
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.5 * ratio;
  ctx.stroke();
  ctx.lineTo(x(elapsed), y(0));
  ctx.closePath();
  ctx.globalAlpha = 0.12;
  ctx.fillStyle = color;
  ctx.fill();
  ctx.globalAlpha = 1;
  for (const ms of arrivals) ctx.fillRect(x(ms) - ratio / 2, height - pad - tick + ratio, ratio, tick);
}

// --- requests ---------------------------------------------------------------------

function requestBody() {
  const prompt = $("prompt").value;
  const parameters = {max_new_tokens: Number.parseInt($("max-new-tokens").value, 10), details: true};
  const temperature = Number.parseFloat($("temperature").value);
  // The server rejects temperature 0: greedy means sampling off and no temperature at all.
  if (temperature) Object.assign(parameters, {do_sample: true, temperature});
  return {inputs: $("chat-template").checked ? chatml(prompt) : prompt, parameters};
}

function authHeaders(headers = {}) {
  const key = $("api-key").value.trim();
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

function post(path, body, signal) {
  const headers = authHeaders({"Content-Type": "application/json"});
  return fetch(path, {method: "POST", headers, body: JSON.stringify(body), signal});
}

function describeError(status, body) {
  if (status === 429 || body.error_type === "overloaded") return "Server busy, retry in a moment.";
  if (status === 401) return "Unauthorized: enter the server's API key above.";
  if (status === 422 || body.error_type === "validation") return body.error;
  return status ? `${body.error || "Request failed"} (HTTP ${status})` : body.error;
}

async function httpError(response) {
  if (response.status === 401) showApiKey(true);
  try {
    return describeError(response.status, await response.json());
  } catch {
    return describeError(response.status, {error: response.statusText});
  }
}

// One SSE frame: `data: {json}` (TGI before 2.1 wrote `data:{json}`), after `id: N` when
// the server's streams are resumable; ":" lines keep alive.
function parseFrame(frame) {
  const lines = frame.split("\n");
  const data = lines.filter((line) => line.startsWith("data:"))
    .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
  const id = lines.find((line) => line.startsWith("id:"));
  return data ? {event: JSON.parse(data), id: id ? Number(id.slice(3)) : null} : null;
}

// Returns true once the stream has said its last word (final event or error).
function handleEvent(panel, event) {
  if (event === null) return false;
  const now = performance.now();
  if (event.error) {
    panel.fail(describeError(0, event), "error", now);
    return true;
  }
  panel.receive(event.token.special ? "" : event.token.text, 1, now);
  if (event.generated_text == null) return false;
  panel.finish(event.generated_text, event.details?.finish_reason, now);
  return true;
}

// With resumable streams on (X-Resume-Token), a stream cut before its last event is
// picked up again from the last event read, up to MAX_RESUMES times.
const MAX_RESUMES = 3;

async function runStream(panel, body, signal) {
  let response = await post("/generate_stream", body, signal);
  const token = response.headers.get("X-Resume-Token");
  const state = {lastId: 0};
  for (let resumes = 0; ; resumes++) {
    if (!response.ok) return panel.fail(await httpError(response), "error", performance.now());
    if (await readEvents(panel, response, state, signal, token)) return;
    if (!token || resumes >= MAX_RESUMES) {
      panel.fail("Stream dropped: the server closed it before the last event.", "error", performance.now());
      return;
    }
    const headers = authHeaders({"Last-Event-ID": String(state.lastId)});
    response = await fetch(`/stream/${encodeURIComponent(token)}`, {headers, signal});
  }
}

// Reads events until the last word (true) or until the stream breaks off (false); a
// network error breaks off too when the stream can be resumed.
async function readEvents(panel, response, state, signal, resumable) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (err) {
      if (signal.aborted || !resumable) throw err;
      return false;
    }
    if (chunk.done) return false;
    buffer += chunk.value;
    for (let end; (end = buffer.indexOf("\n\n")) >= 0; buffer = buffer.slice(end + 2)) {
      const frame = parseFrame(buffer.slice(0, end));
      if (frame === null) continue;
      if (frame.id !== null) state.lastId = frame.id;
      if (handleEvent(panel, frame.event)) return true;
    }
  }
}

async function runPlain(panel, body, signal) {
  const response = await post("/generate", body, signal);
  if (!response.ok) return panel.fail(await httpError(response), "error", performance.now());
  const result = await response.json();
  const now = performance.now();
  panel.receive("", result.details.generated_tokens, now);
  panel.finish(result.generated_text, result.details.finish_reason, now);
}

// Turns what fetch throws into what happened: a Stop, a dropped stream, or no server.
async function guarded(panel, signal, run) {
  try {
    await run();
  } catch (err) {
    const now = performance.now();
    if (signal.aborted) panel.fail("Stopped: request cancelled, the server freed its slot.", "stopped", now);
    else if (panel.arrivals.length) panel.fail("Stream dropped: the connection was lost mid-answer.", "error", now);
    else panel.fail(`Connection failed: ${err.message}`, "error", now);
  }
}

// --- page ---------------------------------------------------------------------------

const panels = {};
let controller = null;
let requestedTokens = 0; // the chart's height while running, so the curve does not rescale per token

function renderAll() {
  const now = performance.now();
  const all = Object.values(panels);
  const maxMs = Math.max(1, ...all.map((panel) => panel.elapsed(now)));
  const maxTokens = Math.max(1, controller ? requestedTokens : 0, ...all.map((panel) => panel.arrivals.length));
  all.forEach((panel) => panel.render(now, maxMs, maxTokens));
  if (controller) requestAnimationFrame(renderAll);
}

async function generate() {
  if (controller) return;
  controller = new AbortController();
  const {signal} = controller;
  const body = requestBody();
  requestedTokens = body.parameters.max_new_tokens || 0;
  const now = performance.now();
  panels.stream.reset(now);
  panels.plain.reset(now);
  setRunning(true);
  requestAnimationFrame(renderAll);
  await Promise.all([
    guarded(panels.stream, signal, () => runStream(panels.stream, body, signal)),
    guarded(panels.plain, signal, () => runPlain(panels.plain, body, signal)),
  ]);
  controller = null;
  setRunning(false);
  renderAll();
}

function setRunning(running) {
  $("generate").disabled = running;
  $("stop").disabled = !running;
}

function showApiKey(focus) {
  $("api-key-row").hidden = false;
  if (focus) $("api-key").focus();
}

async function showModel() {
  try {
    const info = await (await fetch("/info")).json();
    $("model").textContent = `${info.model_id} · up to ${info.max_total_tokens} tokens`;
  } catch {
    $("model").textContent = "";
  }
}

function init() {
  panels.stream = new Panel($("panel-stream"));
  panels.plain = new Panel($("panel-plain"));
  const key = $("api-key");
  key.value = sessionStorage.getItem(KEY_STORAGE) || "";
  key.addEventListener("input", () => sessionStorage.setItem(KEY_STORAGE, key.value));
  if (document.body.dataset.apiKey === "required") showApiKey(false);
  $("generate").addEventListener("click", generate);
  $("stop").addEventListener("click", () => controller?.abort());
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) generate();
  });
  renderAll();
  showModel();
}

document.addEventListener("DOMContentLoaded", init);
