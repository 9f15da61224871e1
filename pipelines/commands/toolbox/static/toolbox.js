// zf toolbox: the page. It sends the current frame (an image file's bytes) to /api/frame and draws
// the answer: the model's view, the top-5, every map of the layer, the chosen unit. Webcam frames
// go one after another (the next when the answer is in); a still image goes again when the layer
// or unit changes. Everything is served by the app itself: nothing is fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);

// The page's state, readable from outside (tests, the console): `shown` is the frame (a Blob) and
// the answer that are on screen now, `frames` how many answers were drawn.
const state = {
  model: null, layer: null, unit: null, source: null, image: null, stream: null,
  paused: false, busy: false, dirty: false, frames: 0, errors: 0, shown: null, stamps: [], stillUrl: null,
};
window.toolbox = state;

function showError(message) {
  state.errors += 1;
  $("error").textContent = message;
  $("error").hidden = false;
}

function clearError() {
  $("error").hidden = true;
}

async function answerOf(response) {
  try {
    return await response.json();
  } catch (error) {
    return { error: `HTTP ${response.status} ${response.statusText}` };
  }
}

async function start() {
  const response = await fetch("/api/model");
  const model = await answerOf(response);
  if (!response.ok) return showError(model.error);
  state.model = model;
  const shape = model.input_shape.join("x");
  $("model").textContent = `${model.model} · input ${shape} · ${model.classes} classes`;
  $("view-caption").textContent = `the model's view (${shape})`;
  $("rule").textContent = model.rule === "deconvnet" ? "deconvnet" : `${model.rule} rule`;
  $("limits").textContent = `Or drop an image anywhere on the page (at most ${model.limits.bytes / 2 ** 20} MiB and ${(model.limits.pixels / 1e6).toFixed(0)} megapixels).`;
  for (const layer of model.layers) {
    const option = document.createElement("option");
    option.value = layer.name;
    option.textContent = `${layer.name} (${layer.maps} maps)`;
    $("layers").append(option);
  }
  state.layer = model.layers[0].name;
  for (const item of model.data) {
    const thumb = document.createElement("img");
    thumb.src = `/api/data/${item.index}.png`;
    thumb.title = `image ${item.index} of --data: ${item.label}`;
    thumb.dataset.index = item.index;
    thumb.addEventListener("click", () => chooseData(thumb));
    $("thumbs").append(thumb);
  }
  $("data").hidden = model.data.length === 0;
  bind();
  loop();
}

function bind() {
  $("webcam").addEventListener("click", startWebcam);
  $("file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) setImage(file, file.name);
    event.target.value = "";
  });
  document.addEventListener("dragover", (event) => event.preventDefault());
  document.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) setImage(file, file.name);
  });
  $("pause").addEventListener("click", () => {
    state.paused = !state.paused;
    $("pause").textContent = state.paused ? "Resume" : "Pause";
  });
  $("layers").addEventListener("change", (event) => {
    state.layer = event.target.value;
    state.unit = null;
    state.dirty = true;
  });
  $("maps").addEventListener("click", chooseUnit);
  $("occlude").addEventListener("click", occlude);
}

async function startWebcam() {
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
    stopWebcam();
    state.stream = stream;
    $("video").srcObject = stream;
    $("video").hidden = false;
    $("still").hidden = true;
    $("frame-caption").textContent = "webcam";
    state.source = "webcam";
    clearError();
  } catch (error) {
    showError(`no webcam: ${error.name}: ${error.message}`);
  }
}

function stopWebcam() {
  if (state.stream) state.stream.getTracks().forEach((track) => track.stop());
  state.stream = null;
}

function setImage(blob, name) {
  stopWebcam();
  $("video").hidden = true;
  if (state.stillUrl) URL.revokeObjectURL(state.stillUrl);
  state.stillUrl = URL.createObjectURL(blob);
  $("still").src = state.stillUrl;
  $("still").hidden = false;
  $("frame-caption").textContent = name;
  state.source = "image";
  state.image = blob;
  state.dirty = true;
}

async function chooseData(thumb) {
  const response = await fetch(thumb.src);
  if (!response.ok) return showError((await answerOf(response)).error);
  document.querySelectorAll("#thumbs img.chosen").forEach((other) => other.classList.remove("chosen"));
  thumb.classList.add("chosen");
  setImage(await response.blob(), thumb.title);
}

function captureWebcam() {
  const video = $("video");
  if (video.readyState < 2 || !video.videoWidth) return Promise.resolve(null);
  const canvas = $("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  // JPEG: encoded and decoded in a few ms (a PNG of 640x480 costs ~20 ms each way); the model sees
  // the frame at 28x28 or 224x224 after all.
  return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.9));
}

async function loop() {
  if (!state.busy && !state.paused) {
    let frame = null;
    if (state.source === "webcam") frame = await captureWebcam();
    else if (state.source === "image" && state.dirty) frame = state.image;
    if (frame) {
      state.dirty = false;
      await send(frame);
    }
  }
  setTimeout(loop, 1);
}

async function send(frame) {
  state.busy = true;
  const started = performance.now();
  const query = new URLSearchParams({ layer: state.layer });
  if (state.unit !== null) query.set("unit", state.unit);
  try {
    const response = await fetch(`/api/frame?${query}`, { method: "POST", body: frame, headers: { "Content-Type": frame.type || "application/octet-stream" } });
    const answer = await answerOf(response);
    if (!response.ok) showError(answer.error || `HTTP ${response.status}`);
    else if (answer.layer === state.layer) {
      clearError();
      render(answer, frame, performance.now() - started);
    }
  } catch (error) {
    showError(`the server did not answer (${error.message}); is zf toolbox still running?`);
  } finally {
    state.busy = false;
  }
}

function render(answer, frame, milliseconds) {
  state.frames += 1;
  state.shown = { frame, answer };
  const now = performance.now();
  state.stamps = [...state.stamps.slice(-9), now];
  const rate = state.stamps.length > 1 ? (1000 * (state.stamps.length - 1)) / (now - state.stamps[0]) : 0;
  const timing = Object.entries(answer.timing_ms).map(([step, ms]) => `${step} ${ms.toFixed(0)}`).join(", ");
  const live = state.source === "webcam" ? `${rate.toFixed(1)} frames/s · ` : "";
  $("status").textContent = `${live}round trip ${milliseconds.toFixed(0)} ms (server ms: ${timing})`;
  $("view").src = answer.view;
  const [height, width] = answer.source_size;
  if (state.source !== "webcam") $("frame-caption").textContent = `${$("frame-caption").textContent.split(" (")[0]} (${width}x${height})`;
  $("top5").replaceChildren(...answer.top5.map((entry) => {
    const item = document.createElement("li");
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(1, 120 * entry.probability)}px`;
    item.append(bar, `${entry.name} ${(100 * entry.probability).toFixed(1)}%`);
    return item;
  }));
  const maps = answer.maps;
  $("maps").src = maps.image;
  $("maps-info").textContent = `${maps.count} maps of ${maps.tile[0]}x${maps.tile[1]}, largest activation ${maps.max.toPrecision(4)}`;
  drawMarker(maps);
  renderUnit(answer.unit, answer.layer);
}

function renderUnit(unit, layer) {
  if (!unit) {
    $("unit-title").textContent = "Unit";
    $("unit-info").textContent = "Click a map of the grid.";
    $("projection").removeAttribute("src");
    $("unit-map").removeAttribute("src");
    $("atlas").hidden = true;
    return;
  }
  $("unit-title").textContent = `${layer} unit ${unit.index}`;
  $("unit-info").textContent = `strongest activation ${unit.activation.toPrecision(4)} at (y ${unit.position[0]}, x ${unit.position[1]}) of its map`;
  $("projection").src = unit.projection;
  $("unit-map").src = unit.map;
  $("atlas").hidden = !unit.atlas;
  if (unit.atlas) {
    $("atlas-page").href = unit.atlas.page;
    if ($("atlas-projections").getAttribute("src") !== unit.atlas.projections) $("atlas-projections").src = unit.atlas.projections;
    if ($("atlas-patches").getAttribute("src") !== unit.atlas.patches) $("atlas-patches").src = unit.atlas.patches;
  }
}

function tileBox(maps, unit) {
  // The tile of map `unit` in the grid picture (zfkeras.io.display.mosaic's layout), in picture pixels.
  const [height, width] = maps.tile;
  const row = Math.floor(unit / maps.columns);
  const column = unit % maps.columns;
  return { left: maps.pad + column * (width + maps.pad), top: maps.pad + row * (height + maps.pad), width, height };
}

function drawMarker(maps) {
  const marker = $("marker");
  const picture = $("maps");
  if (state.unit === null || !picture.naturalWidth) {
    marker.hidden = true;
    return;
  }
  const scale = picture.clientWidth / picture.naturalWidth;
  const box = tileBox(maps, state.unit);
  Object.assign(marker.style, {
    left: `${(box.left - 1) * scale}px`, top: `${(box.top - 1) * scale}px`,
    width: `${(box.width + 2) * scale}px`, height: `${(box.height + 2) * scale}px`,
  });
  marker.hidden = false;
}

function chooseUnit(event) {
  const maps = state.shown && state.shown.answer.maps;
  if (!maps) return;
  const picture = $("maps");
  const rect = picture.getBoundingClientRect();
  const x = ((event.clientX - rect.left) * picture.naturalWidth) / rect.width;
  const y = ((event.clientY - rect.top) * picture.naturalHeight) / rect.height;
  const column = Math.min(maps.columns - 1, Math.max(0, Math.floor((x - maps.pad) / (maps.tile[1] + maps.pad))));
  const row = Math.max(0, Math.floor((y - maps.pad) / (maps.tile[0] + maps.pad)));
  const unit = row * maps.columns + column;
  if (unit >= maps.count) return;
  state.unit = unit;
  state.dirty = true;
  drawMarker(maps);
}

async function occlude() {
  if (!state.shown) return showError("no frame yet: choose an input first");
  const button = $("occlude");
  button.disabled = true;
  $("occlusion-info").textContent = "occluding the current frame…";
  const query = new URLSearchParams({ layer: state.shown.answer.layer });
  if (state.shown.answer.unit) query.set("unit", state.shown.answer.unit.index);
  try {
    const response = await fetch(`/api/occlusion?${query}`, { method: "POST", body: state.shown.frame });
    const answer = await answerOf(response);
    if (!response.ok) {
      $("occlusion-info").textContent = "";
      showError(answer.error);
    } else {
      $("occlusion").src = answer.image;
      $("occlusion").hidden = false;
      const how = answer.incremental ? "incremental exact evaluation" : "full forward passes";
      $("occlusion-info").textContent = `${answer.layer} map ${answer.unit}, p(${answer.label}): ${answer.positions} positions of a ${answer.patch}px square, stride ${answer.stride}px, in ${answer.seconds.toFixed(1)} s (${how})`;
    }
  } catch (error) {
    showError(`the server did not answer (${error.message})`);
  } finally {
    button.disabled = false;
  }
}

start().catch((error) => showError(`the page could not start: ${error.message}`));
