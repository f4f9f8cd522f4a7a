// faceembed's page: every call sends the key from localStorage in x-api-key.
"use strict";
const $ = (id) => document.getElementById(id);
let photo = null;  // the File shown on the canvas

function key() { return localStorage.getItem("faceembed-key") || ""; }

function say(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function call(method, path, body) {
  const resp = await fetch(path, { method, body, headers: { "x-api-key": key() } });
  const isJson = (resp.headers.get("content-type") || "").includes("json");
  const data = isJson ? await resp.json() : await resp.blob();
  if (!resp.ok) throw new Error((data && data.error) || resp.statusText);
  return data;
}

function form(file) {
  const f = new FormData();
  f.append("file", file);
  return f;
}

async function drawFaces(file, faces) {
  const img = await createImageBitmap(file, { imageOrientation: "from-image" });
  const canvas = $("canvas"), ctx = canvas.getContext("2d");
  canvas.width = img.width; canvas.height = img.height;
  ctx.drawImage(img, 0, 0);
  const line = Math.max(2, Math.round(img.width / 200));
  ctx.lineWidth = line;
  ctx.font = `${Math.max(12, line * 6)}px sans-serif`;
  for (const f of faces) {
    const [x, y, w, h] = f.box;
    const label = f.subject || "unknown";
    ctx.strokeStyle = f.subject ? "#1a4" : "#d33";
    ctx.strokeRect(x, y, w, h);
    const tw = ctx.measureText(label).width + 2 * line, th = line * 8;
    ctx.fillStyle = ctx.strokeStyle;
    ctx.fillRect(x, Math.max(0, y - th), tw, th);
    ctx.fillStyle = "#fff";
    ctx.fillText(label, x + line, Math.max(th, y) - line * 2);
  }
  canvas.dataset.faces = JSON.stringify(faces.map((f) => f.subject));
}

function listFaces(faces) {
  const ul = $("faces");
  ul.replaceChildren();
  for (const f of faces) {
    const li = document.createElement("li");
    const best = f.matches && f.matches[0];
    li.textContent = `${f.subject || "unknown"}` + (best ? ` (best ${best.subject}: ${best.similarity.toFixed(3)})` : "");
    ul.append(li);
  }
}

async function recognize(file) {
  photo = file;
  say("recognizing...");
  try {
    const out = await call("POST", "/v1/recognize", form(file));
    await drawFaces(file, out.faces);
    listFaces(out.faces);
    say(`${out.faces.length} face(s)`);
  } catch (e) { say(e.message, true); }
}

async function thumbnail(img, subject) {
  try {
    const faces = await call("GET", `/v1/subjects/${encodeURIComponent(subject)}/faces`);
    if (!faces.faces.length) return;
    const blob = await call("GET", `/v1/faces/${faces.faces[0].face_id}/thumbnail`);
    img.src = URL.createObjectURL(blob);
  } catch (e) { img.alt = "no thumbnail"; }
}

async function refreshSubjects() {
  const ul = $("subjects");
  try {
    const out = await call("GET", "/v1/subjects");
    ul.replaceChildren();
    for (const s of out.subjects) {
      const li = document.createElement("li"), img = document.createElement("img"), span = document.createElement("span");
      img.alt = s.subject;
      span.textContent = `${s.subject} (${s.faces})`;
      li.dataset.subject = s.subject;
      li.append(img, span);
      ul.append(li);
      thumbnail(img, s.subject);
    }
  } catch (e) { say(e.message, true); }
}

async function enroll(event) {
  event.preventDefault();
  const name = $("enroll-name").value.trim();
  if (!photo || !name) { say("choose a photo and a name first", true); return; }
  try {
    const out = await call("POST", `/v1/subjects/${encodeURIComponent(name)}/faces`, form(photo));
    say(`enrolled ${out.subject}`);
    await refreshSubjects();
    await recognize(photo);
  } catch (e) { say(e.message, true); }
}

function setup() {
  $("key").value = key();
  $("save-key").onclick = () => { localStorage.setItem("faceembed-key", $("key").value.trim()); refreshSubjects(); say("key saved"); };
  $("file").onchange = (e) => e.target.files[0] && recognize(e.target.files[0]);
  const drop = $("drop");
  drop.ondragover = (e) => { e.preventDefault(); drop.classList.add("over"); };
  drop.ondragleave = () => drop.classList.remove("over");
  drop.ondrop = (e) => { e.preventDefault(); drop.classList.remove("over"); if (e.dataTransfer.files[0]) recognize(e.dataTransfer.files[0]); };
  $("enroll-form").onsubmit = enroll;
  $("refresh").onclick = refreshSubjects;
  if (key()) refreshSubjects();
}

setup();
