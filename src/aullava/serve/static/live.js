// Live mode: the browser's camera, one frame at a time to the local server's POST /predict (binary format: the
// fastest answer), the next frame sent only when the answer to the last one is back, so nothing queues and the
// page runs at the pace the model answers. Shows the analysed frame with its face boxes, the AU bars of the first
// face, a scrolling time plot of the chosen AUs' p(present), and the frame rate achieved. Frames go to this
// page's own server and nowhere else. Uses app.js's helpers ($, element, bar, drawPicture, postPredict, setStatus, auNames, COLOURS).
"use strict";

const LIVE_PLOT_SECONDS = 60;
const LIVE_PLOT_MAX = 4; // AUs drawn at once: more lines than this are hard to read
const LIVE_PREFERRED = ["AU12", "AU6", "AU4", "AU1", "AU25", "AU2"]; // the ids /health gives (no leading 0)
const LIVE_JPEG_QUALITY = 0.9;
const live = { running: false, stream: null, frames: 0, started: 0, lastMs: 0, history: [], chosen: [] };

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function startLive() {
  if (live.running) return;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("this browser gives the page no camera (open it as http://localhost:… or over https)", true);
    return;
  }
  try {
    live.stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } },
                                                             audio: false });
  } catch (err) {
    setStatus(`the camera is not available: ${err.message || err.name}`, true);
    return;
  }
  const video = $("live-video");
  video.srcObject = live.stream;
  await video.play();
  $("result").hidden = true;
  $("live").hidden = false;
  Object.assign(live, { running: true, frames: 0, started: performance.now(), lastMs: 0, history: [] });
  if (!live.chosen.length) {
    live.chosen = LIVE_PREFERRED.filter((au) => au in auNames).slice(0, LIVE_PLOT_MAX);
  }
  document.body.dataset.live = "on";
  document.body.dataset.liveFrames = "0";
  setStatus("live: camera frames go to the local server only");
  liveLoop();
}

function stopLive() {
  if (!live.running && !live.stream) return;
  live.running = false;
  if (live.stream) live.stream.getTracks().forEach((track) => track.stop());
  live.stream = null;
  document.body.dataset.live = "off";
  $("live-rate").textContent += " (stopped)";
}

// the video's current frame as a canvas (what is shown) and a JPEG (what is sent)
async function grabFrame(video) {
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", LIVE_JPEG_QUALITY));
  return { canvas, blob };
}

async function liveLoop() {
  const video = $("live-video");
  while (live.running) {
    if (!video.videoWidth) {
      await sleep(50);
      continue;
    }
    const { canvas, blob } = await grabFrame(video);
    const form = new FormData();
    form.append("file", blob, "camera.jpg");
    form.append("formats", "binary");
    const sent = performance.now();
    let answer;
    try {
      answer = await postPredict(form);
    } catch (err) {
      setStatus(`live: ${err.message || err}`, true);
      await sleep(1000); // the server is busy or gone: try again, slowly
      continue;
    }
    if (!live.running) break;
    live.lastMs = performance.now() - sent;
    live.frames += 1;
    showLiveAnswer(canvas, answer);
  }
}

function showLiveAnswer(frame, answer) {
  const seconds = (performance.now() - live.started) / 1000;
  drawPicture(frame, answer, $("live-canvas"));
  const face = answer.faces[0];
  const point = { t: seconds, p: {} };
  if (face) {
    answer.aus.forEach((au, i) => { point.p[au] = face.expected.binary ? face.expected.binary[i] : null; });
    $("live-face").replaceChildren(liveTable(face, answer.aus));
  } else {
    $("live-face").replaceChildren(element("p", "legend", "no face in view"));
  }
  live.history.push(point);
  while (live.history.length && live.history[0].t < seconds - LIVE_PLOT_SECONDS) live.history.shift();
  drawPlot(seconds);
  const recent = live.history.slice(-10); // the pace of the last answers, not diluted by the camera's start-up
  const rate = recent.length > 1 ? (recent.length - 1) / Math.max(recent.at(-1).t - recent[0].t, 1e-3)
    : live.frames / Math.max(seconds, 1e-3);
  $("live-rate").textContent = `${live.frames} frames analysed · ${rate.toFixed(1)} frames/s · ` +
    `last answer ${Math.round(live.lastMs)} ms`;
  document.body.dataset.liveFrames = String(live.frames);
}

// per AU: name, present/absent, p(present) bar; a click on a row adds the AU to the time plot or takes it off
function liveTable(face, aus) {
  const table = element("table", "aus");
  const head = element("tr");
  for (const label of ["AU", "", "binary", "p(present)"]) head.append(element("th", null, label));
  const thead = element("thead");
  thead.append(head);
  const body = element("tbody");
  aus.forEach((au, i) => {
    const row = element("tr");
    const present = face.values.binary ? face.values.binary[i] : null;
    const chip = element("td", "chip");
    if (present !== null) chip.append(element("span", present ? "yes" : "no", present ? "present" : "absent"));
    row.append(element("td", "au", au), element("td", "name", auNames[au] || ""), chip,
               bar(face.expected.binary ? face.expected.binary[i] : null, 1, "prob"));
    if (present) row.classList.add("on");
    if (live.chosen.includes(au)) row.classList.add("plotted");
    row.title = "click: show or hide this AU in the time plot";
    row.addEventListener("click", () => {
      live.chosen = live.chosen.includes(au) ? live.chosen.filter((a) => a !== au)
        : [...live.chosen, au].slice(-LIVE_PLOT_MAX);
      row.classList.toggle("plotted", live.chosen.includes(au));
      drawPlot((performance.now() - live.started) / 1000);
    });
    body.append(row);
  });
  table.append(thead, body);
  return table;
}

// p(present) of the chosen AUs over the last LIVE_PLOT_SECONDS, newest on the right; gaps where no face was seen
function drawPlot(now) {
  const canvas = $("live-plot");
  const context = canvas.getContext("2d");
  const [w, h, left, pad] = [canvas.width, canvas.height, 34, 8];
  context.clearRect(0, 0, w, h);
  context.font = "11px sans-serif";
  context.fillStyle = "#667085";
  context.strokeStyle = "#e4e7ec";
  context.lineWidth = 1;
  for (const level of [0, 0.5, 1]) {
    const y = pad + (1 - level) * (h - 2 * pad);
    context.beginPath();
    context.moveTo(left, y);
    context.lineTo(w - pad, y);
    context.stroke();
    context.fillText(level.toFixed(1), 4, y + 4);
  }
  context.fillText(`last ${LIVE_PLOT_SECONDS} s`, w - 70, h - 2);
  const x = (t) => left + (1 - (now - t) / LIVE_PLOT_SECONDS) * (w - left - pad);
  const y = (p) => pad + (1 - p) * (h - 2 * pad);
  context.lineWidth = 2;
  live.chosen.forEach((au, k) => {
    context.strokeStyle = COLOURS[(k + 1) % COLOURS.length];
    context.beginPath();
    let drawing = false;
    for (const point of live.history) {
      const p = point.p[au];
      if (p === null || p === undefined) { drawing = false; continue; }
      if (drawing) context.lineTo(x(point.t), y(p)); else context.moveTo(x(point.t), y(p));
      drawing = true;
    }
    context.stroke();
  });
  $("live-legend").replaceChildren(...live.chosen.map((au, k) => {
    const item = element("span", null, ` ${au} ${auNames[au] || ""}  `);
    const swatch = element("span", "swatch");
    swatch.style.background = COLOURS[(k + 1) % COLOURS.length];
    item.prepend(swatch);
    return item;
  }), element("span", null, live.chosen.length ? "— p(present); click an AU's row to change"
    : "click an AU's row to plot its p(present)"));
}
