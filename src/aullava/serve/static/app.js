// The page: a photo in, the server's answer out: face boxes on the photo, and per face one row per AU with the
// binary answer and its probability, the 0-5 intensity and the 0-1 intensity as bars. Plain JS, no library: the
// page must work on an offline machine.
"use strict";

const COLOURS = ["#e4572e", "#17bebb", "#ffc914", "#76b041", "#8e6c8a", "#2e86ab"];
const MAX_CANVAS = 480;
let auNames = {};
let health = null;

const $ = (id) => document.getElementById(id);

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").classList.toggle("error", Boolean(isError));
}

async function loadHealth() {
  try {
    const response = await fetch("health");
    health = await response.json();
    auNames = Object.fromEntries(health.aus.map((au) => [au.id, au.name]));
    const state = health.trained ? "trained" : "UNTRAINED: its values are meaningless";
    $("model").textContent = `model: ${health.model} (${state}), ${health.aus.length} AUs (${health.au_set})`;
    $("model").classList.toggle("warning", !health.trained);
    if (health.videos) $("file").accept = "image/*,video/*";
  } catch (err) {
    $("model").textContent = "the server does not answer: is `aullava serve` still running?";
  }
}

// one bar: `value` on a 0..`max` scale, with its number beside it; `mean` (the expectation of the model's
// distribution, when it gave one) is a thin dark mark on the same scale
function bar(value, max, className, mean) {
  const cell = element("td", "barcell");
  if (value === null || value === undefined) {
    cell.append(element("span", "na", "–"));
    return cell;
  }
  const track = element("span", "bar " + className);
  const fill = element("span", "fill");
  fill.style.width = `${Math.max(0, Math.min(1, value / max)) * 100}%`;
  track.append(fill);
  if (mean !== null && mean !== undefined) {
    const mark = element("span", "mean");
    mark.style.left = `${Math.max(0, Math.min(1, mean / max)) * 100}%`;
    mark.title = `expected value ${mean.toFixed(2)}`;
    track.append(mark);
  }
  const digits = max === 5 ? (Number.isInteger(value) ? 0 : 1) : 2;
  cell.append(track, element("span", "num", value.toFixed(digits)));
  return cell;
}

function faceTable(face, aus, index) {
  const box = element("section", "face");
  const title = element("h2", null);
  const swatch = element("span", "swatch");
  swatch.style.background = COLOURS[index % COLOURS.length];
  title.append(swatch, `Face ${face.face}`);
  box.append(title);
  const table = element("table", "aus");
  const head = element("tr");
  for (const label of ["AU", "", "binary", "p(present)", "discrete 0–5", "continuous 0–1"]) head.append(element("th", null, label));
  const thead = element("thead");
  thead.append(head);
  table.append(thead);
  const body = element("tbody");
  const values = face.values, expected = face.expected || {};
  aus.forEach((au, i) => {
    const row = element("tr");
    row.append(element("td", "au", au), element("td", "name", auNames[au] || ""));
    const present = values.binary ? values.binary[i] : null;
    const chip = element("td", "chip");
    if (present !== null) chip.append(element("span", present ? "yes" : "no", present ? "present" : "absent"));
    row.append(chip);
    row.append(bar(expected.binary ? expected.binary[i] : null, 1, "prob"));
    const mean = (fmt) => (expected[fmt] ? expected[fmt][i] : null);
    row.append(bar(values.discrete ? values.discrete[i] : null, 5, "disc", mean("discrete")));
    row.append(bar(values.continuous ? values.continuous[i] : null, 1, "cont", mean("continuous")));
    if (present) row.classList.add("on");
    body.append(row);
  });
  table.append(body);
  box.append(table);
  if (expected.discrete || expected.continuous) {
    box.append(element("p", "legend", "Bars: the model's answer. Dark mark: the expected value of its probabilities."));
  }
  return box;
}

// the picture (an <img>, or a canvas holding a camera frame) at most MAX_CANVAS wide, with every face's box and number
function drawPicture(image, answer, canvas = $("canvas")) {
  const [width, height] = [image.naturalWidth || image.width, image.naturalHeight || image.height];
  const scale = Math.min(1, MAX_CANVAS / width);
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  const context = canvas.getContext("2d");
  context.drawImage(image, 0, 0, canvas.width, canvas.height);
  const boxScale = canvas.width / answer.image_size[0]; // boxes are in the decoded (possibly downsized) image
  context.lineWidth = 3;
  context.font = "bold 14px sans-serif";
  answer.faces.forEach((face, index) => {
    const [x0, y0, x1, y1] = face.box.map((v) => v * boxScale);
    const colour = COLOURS[index % COLOURS.length];
    context.strokeStyle = colour;
    context.strokeRect(x0, y0, x1 - x0, y1 - y0);
    context.fillStyle = colour;
    const label = `face ${face.face}`;
    context.fillRect(x0, Math.max(0, y0 - 20), context.measureText(label).width + 10, 20);
    context.fillStyle = "#000";
    context.fillText(label, x0 + 5, Math.max(15, y0 - 5));
  });
}

function showVideo(answer) {
  const faces = $("faces");
  faces.replaceChildren();
  $("canvas").width = 0;
  const note = element("p", null, `${answer.rows.length} rows (one per frame and face). `);
  const link = element("a", null, "Download them as JSON");
  link.href = URL.createObjectURL(new Blob([JSON.stringify(answer.rows, null, 1)], { type: "application/json" }));
  link.download = answer.file.replace(/\.[^.]*$/, "") + "-aus.json";
  note.append(link);
  faces.append(note);
  $("result").hidden = false;
}

// POST /predict; the server's JSON answer, or an Error carrying its message
async function postPredict(form) {
  const response = await fetch("predict", { method: "POST", body: form });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
  return answer;
}

async function analyse(file) {
  if (typeof stopLive === "function") stopLive();
  $("live").hidden = true;
  setStatus(`analysing ${file.name}…`);
  $("result").hidden = true;
  const form = new FormData();
  form.append("file", file, file.name);
  let answer;
  try {
    answer = await postPredict(form);
  } catch (err) {
    setStatus(String(err.message || err), true);
    return;
  }
  if (answer.kind === "video") {
    setStatus(`${file.name}: video analysed`);
    showVideo(answer);
    return;
  }
  const image = new Image();
  image.onload = () => {
    drawPicture(image, answer);
    $("caption").textContent = answer.file;
    const faces = $("faces");
    faces.replaceChildren(...answer.faces.map((face, i) => faceTable(face, answer.aus, i)));
    $("result").hidden = false;
    const count = answer.faces.length;
    setStatus(answer.error ? answer.error : `${answer.file}: ${count} face${count === 1 ? "" : "s"}`, Boolean(answer.error));
    document.body.dataset.state = "done"; // for scripts that wait for the answer (the screenshot)
  };
  image.onerror = () => setStatus(`${file.name}: the browser cannot show this image, but the server read it`, true);
  image.src = URL.createObjectURL(file);
}

function setUp() {
  const drop = $("drop");
  $("camera").addEventListener("click", () => startLive());
  $("live-stop").addEventListener("click", () => stopLive());
  $("file").addEventListener("change", (event) => {
    if (event.target.files.length) analyse(event.target.files[0]);
  });
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    if (event.dataTransfer.files.length) analyse(event.dataTransfer.files[0]);
  });
}

async function main() {
  setUp();
  await loadHealth();
  if (new URLSearchParams(location.search).has("live")) startLive();
  if (new URLSearchParams(location.search).has("example")) {
    const response = await fetch("example.png");
    const blob = await response.blob();
    analyse(new File([blob], "astronaut.png", { type: "image/png" }));
  }
}

main();
