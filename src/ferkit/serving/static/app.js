// ferkit web page: photo upload and live webcam recognition against this server's /v1 API.
// Plain JS, no build step, no third-party code.
"use strict";

const COLORS = {
  angry: "#ff5d5d", disgust: "#8bd450", fear: "#b07cff", happy: "#f5b301",
  sad: "#4f8cff", surprise: "#ff7ac6", neutral: "#9fb0cc",
};
const SPARE = ["#36cfc9", "#ffa940", "#bae637", "#f759ab", "#69b1ff", "#d3adf7"];
const PHOTO_MAX_SIDE = 1600;  // photos are shrunk in the browser before upload
const CAM_SEND_WIDTH = 480;  // webcam frames are sent at this width
const TIMELINE_SECONDS = 30;

const state = {
  classes: ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"],
  maxUploadBytes: 10 * 1024 * 1024,
  photo: null,  // the last photo sent: { blob, name, why }; why: the /v1/explain promise
  cam: { stream: null, running: false, facing: "user", faces: [], sendScale: 1,
         done: [], history: [], inFlight: false, loopId: 0 },
};

const $ = (id) => document.getElementById(id);
const pct = (p) => `${Math.round(p * 100)}%`;

function colorOf(name) {
  if (COLORS[name]) return COLORS[name];
  const i = state.classes.indexOf(name);
  return SPARE[(i < 0 ? 0 : i) % SPARE.length];
}

function setStatus(el, text, isError = false) {
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function apiError(res) {
  try {
    const body = await res.json();
    return `${res.status} ${body.error || ""}: ${body.detail || res.statusText}`;
  } catch (_) {
    return `${res.status} ${res.statusText}`;
  }
}

// ---------------------------------------------------------------- model info

async function loadModelInfo() {
  const el = $("model-info");
  try {
    const res = await fetch("v1/model");
    if (!res.ok) throw new Error(await apiError(res));
    const info = await res.json();
    if (Array.isArray(info.classes) && info.classes.length) state.classes = info.classes;
    if (info.limits && info.limits.max_upload_mb) {
      state.maxUploadBytes = info.limits.max_upload_mb * 1024 * 1024;
    }
    const acc = typeof info.accuracy === "number" ? ` · ${(info.accuracy * (info.accuracy <= 1 ? 100 : 1)).toFixed(1)}% acc` : "";
    el.innerHTML = "";
    const b = document.createElement("b");
    b.textContent = info.name;
    el.append("model ", b, ` · ${info.arch || "?"}${acc}`);
    el.title = `${info.name}: ${info.arch}, classes ${info.classes.join(", ")}, on ${info.device}`;
  } catch (err) {
    el.textContent = "model unavailable";
    el.title = String(err);
  }
  buildLegend();
}

// ---------------------------------------------------------------- tabs

function showPanel(tab) {
  for (const t of document.querySelectorAll(".tab")) {
    const on = t === tab;
    t.classList.toggle("active", on);
    t.setAttribute("aria-selected", String(on));
    $(t.dataset.panel).hidden = !on;
  }
  if (tab.id !== "tab-webcam") stopCamera();
  else resizeTimeline();
}

// ---------------------------------------------------------------- drawing

function drawBoxes(ctx, faces, opts = {}) {
  const { scale = 1, mirrorWidth = 0, numbered = false } = opts;
  const W = ctx.canvas.width;
  // Sizes in CSS pixels, so labels read the same on a phone and on a 4K photo.
  const k = W / (ctx.canvas.getBoundingClientRect().width || W);
  const lw = Math.max(1, 2.5 * k);
  const fontPx = Math.round(14 * k);
  ctx.save();
  ctx.font = `700 ${fontPx}px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif`;
  ctx.textBaseline = "middle";
  faces.forEach((f, i) => {
    let [x, y, w, h] = f.box.map((v) => v * scale);
    if (mirrorWidth) x = mirrorWidth - x - w;
    const color = colorOf(f.expression);
    ctx.lineWidth = lw;
    ctx.strokeStyle = color;
    ctx.shadowColor = "rgba(0,0,0,.55)";
    ctx.shadowBlur = lw * 2;
    roundRect(ctx, x, y, w, h, Math.min(w, h) * 0.06);
    ctx.stroke();
    ctx.shadowBlur = 0;
    const text = `${numbered ? `${i + 1}  ` : ""}${f.expression} ${pct(f.score)}`;
    const tw = ctx.measureText(text).width;
    const padX = fontPx * 0.5;
    const bh = fontPx * 1.6;
    const bw = tw + padX * 2;
    let by = y - bh - lw;
    if (by < 0) by = y + h + lw;
    if (by + bh > ctx.canvas.height) by = Math.max(0, y + lw);
    const bx = Math.min(Math.max(0, x - lw / 2), Math.max(0, W - bw));
    ctx.fillStyle = color;
    roundRect(ctx, bx, by, bw, bh, bh * 0.25);
    ctx.fill();
    ctx.fillStyle = "#0d1220";
    ctx.fillText(text, bx + padX, by + bh / 2 + 1);
  });
  ctx.restore();
}

function roundRect(ctx, x, y, w, h, r) {
  ctx.beginPath();
  if (ctx.roundRect) ctx.roundRect(x, y, w, h, r);
  else ctx.rect(x, y, w, h);
}

function bars(probabilities, top) {
  const wrap = document.createElement("div");
  wrap.className = "bars";
  for (const name of state.classes) {
    const p = probabilities[name] ?? 0;
    const row = document.createElement("div");
    row.className = "bar-row" + (name === top ? " top" : "");
    row.dataset.class = name;
    const label = document.createElement("span");
    label.className = "bar-name";
    label.textContent = name;
    const track = document.createElement("span");
    track.className = "bar-track";
    const fill = document.createElement("span");
    fill.className = "bar-fill";
    fill.style.width = `${(p * 100).toFixed(1)}%`;
    fill.style.background = colorOf(name);
    fill.style.display = "block";
    track.append(fill);
    const val = document.createElement("span");
    val.className = "bar-val";
    val.textContent = pct(p);
    row.append(label, track, val);
    wrap.append(row);
  }
  return wrap;
}

function faceHead(face, num) {
  const head = document.createElement("div");
  head.className = "face-head";
  if (num) {
    const n = document.createElement("span");
    n.className = "face-num";
    n.style.background = colorOf(face.expression);
    n.textContent = String(num);
    head.append(n);
  }
  const label = document.createElement("span");
  label.className = "face-label";
  label.textContent = face.expression;
  const score = document.createElement("span");
  score.className = "face-score";
  score.textContent = pct(face.score);
  head.append(label, score);
  return head;
}

// ---------------------------------------------------------------- photo mode

async function shrinkForUpload(file) {
  // Decode in the browser (EXIF orientation applied) and re-encode at most PHOTO_MAX_SIDE wide;
  // returns null when this browser cannot decode the file (the server then gets it as it is).
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch (_) {
    return null;
  }
  const s = Math.min(1, PHOTO_MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(bitmap.width * s));
  canvas.height = Math.max(1, Math.round(bitmap.height * s));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  return blob ? { canvas, blob } : null;
}

async function handleFile(file) {
  const status = $("photo-status");
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    setStatus(status, `${file.name} is not an image (${file.type}).`, true);
    return;
  }
  setStatus(status, `Reading ${file.name}…`);
  const shrunk = await shrinkForUpload(file);
  const body = new FormData();
  body.append("image", shrunk ? shrunk.blob : file, shrunk ? "photo.jpg" : file.name);
  state.photo = { blob: shrunk ? shrunk.blob : file, name: shrunk ? "photo.jpg" : file.name, why: null };
  if (!shrunk && file.size > state.maxUploadBytes) {
    setStatus(status, `${file.name} is too large for this server (${(file.size / 2 ** 20).toFixed(1)} MB).`, true);
    return;
  }
  setStatus(status, "Recognising…");
  const t0 = performance.now();
  let result;
  try {
    const res = await fetch("v1/predict", { method: "POST", body });
    if (!res.ok) throw new Error(await apiError(res));
    result = await res.json();
  } catch (err) {
    setStatus(status, `Could not recognise ${file.name}: ${err.message || err}`, true);
    return;
  }
  const ms = Math.round(performance.now() - t0);
  showPhotoResult(result, shrunk && shrunk.canvas);
  const n = result.faces.length;
  setStatus(status, n
    ? `${n} face${n > 1 ? "s" : ""} in ${file.name} · server ${Math.round(result.elapsed_ms)} ms, round trip ${ms} ms`
    : `No face found in ${file.name}. Try a photo where faces are larger, frontal and well lit.`);
}

function showPhotoResult(result, source) {
  const canvas = $("photo-canvas");
  const ctx = canvas.getContext("2d");
  $("photo-result").hidden = false;
  if (source) {
    canvas.width = source.width;
    canvas.height = source.height;
    ctx.drawImage(source, 0, 0);
  } else {
    canvas.width = result.width;
    canvas.height = result.height;
    ctx.fillStyle = "#070a12";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  }
  drawBoxes(ctx, result.faces, { scale: canvas.width / result.width, numbered: true });
  const list = $("faces");
  list.innerHTML = "";
  if (!result.faces.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "No face found.";
    list.append(li);
  }
  result.faces.forEach((face, i) => {
    const li = document.createElement("li");
    li.className = "face-card";
    li.dataset.expression = face.expression;
    li.append(faceHead(face, i + 1));
    if (face.flags && face.flags.length) {
      const fl = document.createElement("div");
      fl.className = "face-flags";
      fl.textContent = `flagged: ${face.flags.join(", ")}`;
      li.append(fl);
    }
    li.append(bars(face.probabilities, face.expression));
    li.append(whyButton(i));
    list.append(li);
  });
}

// ---------------------------------------------------------------- why: saliency maps

function whyButton(i) {
  // A button that shows, under the face's bars, the face the model saw beside a map of the
  // parts that made it name the expression (/v1/explain, asked once per photo).
  const wrap = document.createElement("div");
  wrap.className = "why";
  const btn = document.createElement("button");
  btn.className = "btn ghost why-btn";
  btn.type = "button";
  btn.textContent = "Why?";
  btn.title = "Show which parts of the face made the model name this expression";
  const out = document.createElement("div");
  out.className = "why-out";
  out.hidden = true;
  btn.addEventListener("click", () => toggleWhy(i, btn, out));
  wrap.append(btn, out);
  return wrap;
}

async function toggleWhy(i, btn, out) {
  if (!out.hidden) { out.hidden = true; btn.textContent = "Why?"; return; }
  const photo = state.photo;
  if (!photo) return;
  btn.disabled = true;
  btn.textContent = "Explaining…";
  if (!photo.why) {
    const body = new FormData();
    body.append("image", photo.blob, photo.name);
    photo.why = fetch("v1/explain", { method: "POST", body }).then(async (res) => {
      if (!res.ok) throw new Error(await apiError(res));
      return res.json();
    });
  }
  out.innerHTML = "";
  try {
    const result = await photo.why;
    const face = result.faces[i];
    if (!face) throw new Error("the face was not found again");
    const img = document.createElement("img");
    img.className = "why-img";
    img.src = face.image;
    img.alt = `Face ${i + 1} as the model saw it, and the parts that made it say ${face.expression}`;
    const note = document.createElement("p");
    note.className = "why-note";
    note.textContent = `${face.method === "gradcam" ? "Grad-CAM" : face.method} map of ${face.explained}: red counted most, blue least.`;
    out.append(img, note);
    btn.textContent = "Hide why";
  } catch (err) {
    photo.why = null;  // a later click asks again
    const p = document.createElement("p");
    p.className = "why-note error";
    p.textContent = `Could not explain: ${err.message || err}`;
    out.append(p);
    btn.textContent = "Why?";
  }
  out.hidden = false;
  btn.disabled = false;
}

function setupPhoto() {
  const input = $("file-input");
  const zone = $("dropzone");
  input.addEventListener("change", () => {
    handleFile(input.files[0]);
    input.value = "";
  });
  for (const ev of ["dragenter", "dragover"]) {
    zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.add("dragover"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    zone.addEventListener(ev, (e) => { e.preventDefault(); zone.classList.remove("dragover"); });
  }
  zone.addEventListener("drop", (e) => {
    const file = e.dataTransfer && e.dataTransfer.files[0];
    if (file) handleFile(file);
  });
  // Dropping a file anywhere else on the page should not navigate away from it.
  window.addEventListener("dragover", (e) => e.preventDefault());
  window.addEventListener("drop", (e) => e.preventDefault());
}

// ---------------------------------------------------------------- webcam mode

async function startCamera() {
  const status = $("cam-status");
  const cam = state.cam;
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus(status, "The webcam needs a secure page: open this server on localhost, or serve it over HTTPS (ferkit serve --ssl-certfile … --ssl-keyfile …). Photo upload works everywhere.", true);
    return;
  }
  stopCamera();
  setStatus(status, "Asking for the camera…");
  try {
    cam.stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: cam.facing, width: { ideal: 640 }, height: { ideal: 480 } },
      audio: false,
    });
  } catch (err) {
    setStatus(status, `No camera: ${err.name === "NotAllowedError" ? "permission was denied" : err.message || err.name}.`, true);
    return;
  }
  const video = $("cam-video");
  video.srcObject = cam.stream;
  await video.play().catch(() => {});
  if (!video.videoWidth) await new Promise((r) => video.addEventListener("loadedmetadata", r, { once: true }));
  cam.running = true;
  cam.faces = [];
  cam.done = [];
  cam.history = [];
  cam.loopId += 1;
  $("cam-start").disabled = true;
  $("cam-stop").disabled = false;
  $("cam-placeholder").hidden = true;
  setStatus(status, "Live: frames go to the server a few times a second; nothing is stored.");
  requestAnimationFrame(renderCamera);
  sendLoop(cam.loopId);
}

function stopCamera() {
  const cam = state.cam;
  cam.running = false;
  cam.loopId += 1;
  if (cam.stream) for (const t of cam.stream.getTracks()) t.stop();
  cam.stream = null;
  $("cam-video").srcObject = null;
  $("cam-start").disabled = false;
  $("cam-stop").disabled = true;
  $("cam-placeholder").hidden = false;
  $("fps").textContent = "– fps";
  $("latency").textContent = "";
}

function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

async function grabFrame(video, canvas) {
  const s = Math.min(1, CAM_SEND_WIDTH / video.videoWidth);
  canvas.width = Math.round(video.videoWidth * s);
  canvas.height = Math.round(video.videoHeight * s);
  canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
  const blob = await new Promise((r) => canvas.toBlob(r, "image/jpeg", 0.8));
  return { blob, scale: 1 / s };
}

async function sendLoop(id) {
  // One request in flight at a time, started at most every 1000/rate ms.
  const cam = state.cam;
  const video = $("cam-video");
  const grab = document.createElement("canvas");
  while (cam.running && cam.loopId === id) {
    const interval = 1000 / Number($("cam-rate").value || 8);
    const t0 = performance.now();
    if (document.hidden || !video.videoWidth) { await sleep(interval); continue; }
    try {
      const { blob, scale } = await grabFrame(video, grab);
      const res = await fetch("v1/predict", { method: "POST", headers: { "Content-Type": "image/jpeg" }, body: blob });
      if (!res.ok) throw new Error(await apiError(res));
      const result = await res.json();
      if (cam.loopId !== id) break;
      cam.faces = result.faces;
      cam.sendScale = scale;
      const now = performance.now();
      cam.done.push({ t: now, ms: now - t0 });
      cam.done = cam.done.filter((d) => now - d.t < 2000);
      recordTimeline(now, result.faces);
      updateLive(result.faces);
      updateFps();
    } catch (err) {
      if (cam.loopId !== id) break;
      setStatus($("cam-status"), `Server error: ${err.message || err}; retrying…`, true);
      await sleep(1000);
      if (cam.running && cam.loopId === id) setStatus($("cam-status"), "Live: frames go to the server a few times a second; nothing is stored.");
    }
    await sleep(Math.max(0, interval - (performance.now() - t0)));
  }
}

function updateFps() {
  const done = state.cam.done;
  if (done.length < 2) return;
  const span = (done[done.length - 1].t - done[0].t) / 1000;
  const fps = span > 0 ? (done.length - 1) / span : 0;
  const lat = done.reduce((a, d) => a + d.ms, 0) / done.length;
  $("fps").textContent = `${fps.toFixed(1)} fps`;
  $("latency").textContent = `${Math.round(lat)} ms`;
}

function largest(faces) {
  let best = null;
  for (const f of faces) if (!best || f.box[2] * f.box[3] > best.box[2] * best.box[3]) best = f;
  return best;
}

function updateLive(faces) {
  const list = $("live-faces");
  list.innerHTML = "";
  if (!faces.length) {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "no face in view";
    list.append(li);
    return;
  }
  const sorted = [...faces].sort((a, b) => b.box[2] * b.box[3] - a.box[2] * a.box[3]);
  for (const face of sorted.slice(0, 4)) {
    const li = document.createElement("li");
    li.className = "face-card live-item-card";
    li.dataset.expression = face.expression;
    li.append(faceHead(face, 0), bars(face.probabilities, face.expression));
    list.append(li);
  }
}

function renderCamera() {
  const cam = state.cam;
  if (!cam.running) return;
  const video = $("cam-video");
  const canvas = $("cam-canvas");
  if (video.videoWidth) {
    if (canvas.width !== video.videoWidth || canvas.height !== video.videoHeight) {
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      $("cam-stage").style.aspectRatio = `${video.videoWidth} / ${video.videoHeight}`;
    }
    const ctx = canvas.getContext("2d");
    const mirror = cam.facing === "user";
    ctx.save();
    if (mirror) { ctx.translate(canvas.width, 0); ctx.scale(-1, 1); }
    ctx.drawImage(video, 0, 0, canvas.width, canvas.height);
    ctx.restore();
    drawBoxes(ctx, cam.faces, { scale: cam.sendScale, mirrorWidth: mirror ? canvas.width : 0 });
  }
  drawTimeline();
  requestAnimationFrame(renderCamera);
}

// ---------------------------------------------------------------- timeline

function buildLegend() {
  const legend = $("legend");
  legend.innerHTML = "";
  for (const name of state.classes) {
    const s = document.createElement("span");
    const i = document.createElement("i");
    i.style.background = colorOf(name);
    s.append(i, name);
    legend.append(s);
  }
}

function recordTimeline(now, faces) {
  const f = largest(faces);
  const h = state.cam.history;
  h.push({ t: now, p: f ? f.probabilities : null });
  while (h.length && now - h[0].t > TIMELINE_SECONDS * 1000) h.shift();
}

function resizeTimeline() {
  const c = $("timeline");
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(100, Math.round(c.clientWidth * dpr));
  const h = Math.max(60, Math.round(c.clientHeight * dpr));
  if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
  drawTimeline();
}

function drawTimeline() {
  const c = $("timeline");
  const ctx = c.getContext("2d");
  const W = c.width, H = c.height;
  const dpr = window.devicePixelRatio || 1;
  const padL = 34 * dpr, padR = 8 * dpr, padT = 8 * dpr, padB = 18 * dpr;
  const pw = W - padL - padR, ph = H - padT - padB;
  ctx.clearRect(0, 0, W, H);
  ctx.font = `${11 * dpr}px system-ui, sans-serif`;
  ctx.fillStyle = "#8f9bb5";
  ctx.strokeStyle = "rgba(143,155,181,.18)";
  ctx.lineWidth = 1;
  ctx.textBaseline = "middle";
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    const y = padT + ph * (1 - v);
    ctx.beginPath(); ctx.moveTo(padL, y); ctx.lineTo(W - padR, y); ctx.stroke();
    ctx.fillText(`${v * 100}%`, 2 * dpr, y);
  }
  ctx.textBaseline = "alphabetic";
  for (let s = 0; s <= TIMELINE_SECONDS; s += 10) {
    const x = padL + pw * (1 - s / TIMELINE_SECONDS);
    ctx.fillText(s ? `-${s}s` : "now", Math.min(x - 10 * dpr, W - 28 * dpr), H - 3 * dpr);
  }
  const h = state.cam.history;
  if (!h.length) return;
  const now = state.cam.running ? performance.now() : h[h.length - 1].t;
  const xOf = (t) => padL + pw * (1 - (now - t) / (TIMELINE_SECONDS * 1000));
  ctx.lineWidth = 2 * dpr;
  ctx.lineJoin = "round";
  for (const name of state.classes) {
    ctx.strokeStyle = colorOf(name);
    ctx.beginPath();
    let pen = false;
    for (const pt of h) {
      if (!pt.p) { pen = false; continue; }
      const x = xOf(pt.t), y = padT + ph * (1 - (pt.p[name] ?? 0));
      if (pen) ctx.lineTo(x, y); else ctx.moveTo(x, y);
      pen = true;
    }
    ctx.stroke();
  }
}

// ---------------------------------------------------------------- start

function init() {
  for (const t of document.querySelectorAll(".tab")) t.addEventListener("click", () => showPanel(t));
  setupPhoto();
  $("cam-start").addEventListener("click", startCamera);
  $("cam-stop").addEventListener("click", stopCamera);
  $("cam-flip").addEventListener("click", () => {
    state.cam.facing = state.cam.facing === "user" ? "environment" : "user";
    if (state.cam.running) startCamera();
  });
  window.addEventListener("resize", resizeTimeline);
  document.addEventListener("visibilitychange", () => { if (document.hidden) state.cam.done = []; });
  buildLegend();
  loadModelInfo();
}

init();
