// comfyfleet console: a small static app over the HTTP API. No build step, no dependency, no CDN.
// The token (when the server asks for one) lives in sessionStorage only: this tab, until it is closed.
"use strict";

const TOKEN_KEY = "comfyfleet-token";
const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
};

const state = { workflows: [], current: null, watching: null, stream: null };

// --- API ----------------------------------------------------------------------------------------
let tokenWaiters = [];

function authHeaders() {
  const t = sessionStorage.getItem(TOKEN_KEY);
  return t ? { Authorization: `Bearer ${t}` } : {};
}

function askToken(message) {
  const dialog = $("#token-dialog");
  $("#token-error").textContent = message || "";
  if (!dialog.open) dialog.showModal();
  $("#token-input").focus();
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

$("#token-form").addEventListener("submit", () => {
  const value = $("#token-input").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("#token-input").value = "";
  $("#forget-token").hidden = false;
  const waiters = tokenWaiters;
  tokenWaiters = [];
  waiters.forEach((w) => w());
});

$("#forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  $("#forget-token").hidden = true;
});

async function api(path, opts = {}) {
  for (;;) {
    const headers = { ...(opts.headers || {}), ...authHeaders() };
    if (opts.json !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, {
      method: opts.method || "GET",
      headers,
      body: opts.json !== undefined ? JSON.stringify(opts.json) : undefined,
    });
    if (resp.status === 401) {
      const had = sessionStorage.getItem(TOKEN_KEY);
      sessionStorage.removeItem(TOKEN_KEY);
      await askToken(had ? "That token was refused; try again." : "");
      continue;
    }
    let body = null;
    const type = resp.headers.get("content-type") || "";
    if (type.includes("json")) body = await resp.json();
    if (!resp.ok) {
      const err = new Error((body && body.detail) || `${resp.status} ${resp.statusText}`);
      err.status = resp.status;
      err.body = body;
      throw err;
    }
    return body;
  }
}

// Server-Sent Events over fetch (EventSource cannot send the Authorization header).
function streamEvents(path, onEvent) {
  const ctrl = new AbortController();
  (async () => {
    const resp = await fetch(path, { headers: { ...authHeaders(), Accept: "text/event-stream" }, signal: ctrl.signal });
    if (!resp.ok || !resp.body) return;
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) event = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
        }
        if (data.length) onEvent(event, JSON.parse(data.join("\n")));
      }
    }
  })().catch((e) => {
    if (e.name !== "AbortError") console.warn("event stream ended:", e);
  });
  return ctrl;
}

// --- helpers ------------------------------------------------------------------------------------
const money = (v) => (v === null || v === undefined ? "-" : `$${Number(v).toFixed(4)}`);
const secs = (v) => (v === null || v === undefined ? "-" : v < 90 ? `${v.toFixed(1)} s` : `${(v / 60).toFixed(1)} min`);
const when = (t) => (t ? new Date(t * 1000).toLocaleString() : "-");
const LABELS = {
  prompt: "Prompt", negative_prompt: "Negative prompt", num_frames: "Frames", width: "Width",
  height: "Height", steps: "Steps", cfg_scale: "CFG scale", seed: "Seed (-1 = random)", fps: "FPS",
};

function fileToBase64(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).split(",", 2)[1]);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

// --- views --------------------------------------------------------------------------------------
function show(view) {
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== `view-${view}`;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view);
  if (view === "gallery") loadGallery();
  if (view === "fleet") loadFleet();
}

function route() {
  const [view, id] = (location.hash.slice(1) || "create").split("/");
  if (view === "watch" && id) watch(id);
  show(["create", "watch", "gallery", "fleet"].includes(view) ? view : "create");
}
window.addEventListener("hashchange", route);

// --- create -------------------------------------------------------------------------------------
function fieldError(name, message) {
  let p = document.querySelector(`.field-error[data-for="${CSS.escape(name)}"]`);
  if (!p) p = document.querySelector('.field-error[data-for="body"]');
  p.textContent = message;
  const input = document.getElementById(`f-${name}`);
  if (input) input.setAttribute("aria-invalid", "true");
}

function clearErrors() {
  for (const p of document.querySelectorAll("#create-form .field-error")) p.textContent = "";
  for (const i of document.querySelectorAll("#create-form [aria-invalid]")) i.removeAttribute("aria-invalid");
}

function buildForm(wf) {
  state.current = wf;
  $("#workflow-description").textContent = wf.description || "";
  const inputs = $("#inputs");
  inputs.replaceChildren();
  for (const inp of wf.inputs) {
    const accept = inp.kind === "audio" ? "audio/*" : "image/*";
    inputs.append(el("div", { class: "field drop" },
      el("label", { for: `f-${inp.name}`, text: `${inp.name.replace("_", " ")} (${inp.kind}${inp.required ? ", required" : ", optional"})` }),
      el("input", { id: `f-${inp.name}`, name: inp.name, type: "file", accept, "data-kind": inp.kind }),
      el("p", { class: "field-error", "data-for": inp.name })));
  }
  const params = $("#params");
  params.replaceChildren();
  for (const p of wf.params) {
    const id = `f-${p.name}`;
    let input;
    if (p.choices) {
      input = el("select", { id, name: p.name }, el("option", { value: "", text: `default (${p.default})` }));
      for (const c of p.choices) input.append(el("option", { value: c, text: c }));
    } else if (p.type === "string") {
      input = el("textarea", { id, name: p.name, rows: p.name === "prompt" ? 3 : 2, maxlength: p.max_length });
      if (p.name === "negative_prompt" && p.default) input.placeholder = "workflow default";
    } else {
      const step = p.type === "float" ? "any" : (p.multiple_of || 1);
      input = el("input", { id, name: p.name, type: "number", min: p.min, max: p.max, step, "data-type": p.type });
      if (p.default !== undefined && p.default !== null) input.value = p.default;
      if (p.name === "width" || p.name === "height") { input.value = ""; input.placeholder = `from the image (${p.default})`; }
    }
    const limits = [];
    if (p.min !== undefined) limits.push(`${p.min}..${p.max}`);
    if (p.multiple_of && p.multiple_of > 1) limits.push(p.remainder ? `${p.multiple_of}n+${p.remainder}` : `multiple of ${p.multiple_of}`);
    params.append(el("div", { class: "field" },
      el("label", { for: id, text: LABELS[p.name] || p.name }),
      input,
      limits.length ? el("span", { class: "hint", text: limits.join(", ") }) : null,
      el("p", { class: "field-error", "data-for": p.name })));
  }
  const choices = $("#choices");
  choices.replaceChildren();
  for (const [key, label] of [["camera_motions", "Camera move"], ["quality_presets", "Quality preset"]]) {
    if (!wf[key] || !wf[key].length) continue;
    const field = key === "camera_motions" ? "camera_motion" : "quality_preset";
    const sel = el("select", { id: `f-${field}`, name: field }, el("option", { value: "", text: "default" }));
    for (const c of wf[key]) sel.append(el("option", { value: c.name, text: c.label || c.name }));
    choices.append(el("div", { class: "field" }, el("label", { for: `f-${field}`, text: label }), sel,
      el("p", { class: "field-error", "data-for": field })));
  }
}

function addSegment() {
  const list = $("#segment-list");
  const n = list.children.length + 2;
  list.append(el("div", { class: "field segment" },
    el("label", { text: `Segment ${n} prompt` }),
    el("textarea", { name: "segment-prompt", rows: 2 }),
    el("p", { class: "field-error", "data-for": `segments[${n - 1}].prompt` })));
}
$("#add-segment").addEventListener("click", addSegment);
$("#f-story").addEventListener("change", (e) => {
  $("#segments").hidden = !e.target.checked;
  if (e.target.checked && !$("#segment-list").children.length) addSegment();
});

async function collect() {
  const wf = state.current;
  const body = { workflow: wf.name };
  for (const p of wf.params) {
    const v = document.getElementById(`f-${p.name}`).value;
    if (v === "" || v === undefined) continue;
    body[p.name] = p.type === "string" ? v : Number(v);
  }
  for (const field of ["camera_motion", "quality_preset"]) {
    const s = document.getElementById(`f-${field}`);
    if (s && s.value) body[field] = s.value;
  }
  for (const inp of wf.inputs) {
    const f = document.getElementById(`f-${inp.name}`).files[0];
    if (!f) {
      if (inp.required) throw Object.assign(new Error("required"), { field: inp.name, message: `choose a file (${inp.kind})` });
      continue;
    }
    body[inp.name === "image" ? "image_base64" : `${inp.name}_base64`] = await fileToBase64(f);
  }
  return body;
}

$("#create-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  clearErrors();
  const button = $("#submit");
  button.disabled = true;
  try {
    const body = await collect();
    let job;
    if ($("#f-story").checked) {
      const { image_base64, workflow, prompt, ...shared } = body;
      const prompts = [prompt, ...[...document.querySelectorAll('[name="segment-prompt"]')].map((t) => t.value)];
      job = await api("/vastai/generate-story", { method: "POST", json: { image_base64, workflow, ...shared, segments: prompts.map((p) => ({ prompt: p })) } });
      location.hash = `watch/${job.story_id}`;
    } else {
      job = await api("/vastai/generate-video", { method: "POST", json: body });
      location.hash = `watch/${job.job_id}`;
    }
  } catch (err) {
    if (err.field) fieldError(err.field, err.message);
    else if (err.body && err.body.errors) for (const x of err.body.errors) fieldError(x.field, x.message);
    else fieldError("body", err.message);
  } finally {
    button.disabled = false;
  }
});

$("#f-workflow").addEventListener("change", (e) => buildForm(state.workflows.find((w) => w.name === e.target.value)));

// --- watch --------------------------------------------------------------------------------------
function renderJob(j) {
  $("#watch-state").textContent = j.state;
  $("#watch-stage").textContent = j.stage || "-";
  $("#watch-queue").textContent = j.queue_position ?? "-";
  const p = Number(j.progress || 0);
  $("#watch-progress").value = p;
  $("#watch-percent").textContent = `${Math.round(p * 100)}%`;
  const d = j.detail || {};
  if (d.step) $("#watch-step").textContent = `${d.step} / ${d.steps}`;
  if (j.segment) $("#watch-segment").textContent = `${j.segment} of ${j.segments}`;
  const terminal = ["succeeded", "failed", "cancelled", "ended"].includes(j.state);
  $("#cancel").hidden = terminal;
  if (j.error) {
    $("#watch-error").hidden = false;
    $("#watch-error").textContent = j.error.message || String(j.error);
  }
  const r = j.result;
  if (j.state === "succeeded" && r && r.video_url) {
    $("#watch-result").hidden = false;
    const v = $("#watch-video");
    if (v.dataset.src !== r.video_url) {
      v.dataset.src = r.video_url;
      v.src = r.video_url;
      if (r.last_frame_url) v.poster = r.last_frame_url;
    }
    v.dataset.frames = r.num_frames;
    v.dataset.fps = r.fps;
    $("#watch-facts").textContent = `seed ${r.seed ?? "-"} · ${r.num_frames ?? "?"} frames at ${r.fps ?? "?"} fps · ${r.resolution || ""} · cost ${money(r.cost_usd ?? j.cost_usd)}`;
  }
}

function watch(id) {
  if (state.watching === id) return;
  if (state.stream) state.stream.abort();
  state.watching = id;
  const kind = id.startsWith("story_") ? "stories" : "jobs";
  $("#watch-id").textContent = id;
  $("#watch-empty").hidden = true;
  $("#watch-body").hidden = false;
  $("#watch-result").hidden = true;
  $("#watch-error").hidden = true;
  $("#watch-step").textContent = "-";
  $("#watch-segment").textContent = "-";
  const v = $("#watch-video");
  v.removeAttribute("src");
  delete v.dataset.src;
  state.stream = streamEvents(`/${kind}/${id}/events`, (event, data) => {
    renderJob({ ...data, state: data.state });
  });
}

$("#cancel").addEventListener("click", async () => {
  const id = state.watching;
  if (!id) return;
  try {
    const j = await api(`/${id.startsWith("story_") ? "stories" : "jobs"}/${id}`, { method: "DELETE" });
    renderJob(j);
  } catch (err) {
    $("#watch-error").hidden = false;
    $("#watch-error").textContent = err.message;
  }
});

// --- gallery ------------------------------------------------------------------------------------
async function loadGallery() {
  const st = $("#g-state").value;
  const wf = $("#g-workflow").value;
  const q = st ? `?state=${encodeURIComponent(st)}&limit=60` : "?limit=60";
  const { jobs } = await api(`/jobs${q}`);
  const box = $("#gallery-items");
  box.replaceChildren();
  for (const j of jobs.filter((x) => !wf || x.workflow === wf)) {
    const r = j.result || {};
    const p = j.params || {};
    const card = el("article", { class: `card ${j.state}`, "data-job": j.job_id },
      el("header", {}, el("a", { href: `#watch/${j.job_id}`, text: j.job_id }), el("span", { class: `state ${j.state}`, text: j.state })),
      r.video_url ? el("video", { src: r.video_url, controls: true, preload: "none", poster: r.last_frame_url }) : null,
      r.last_frame_url ? el("a", { href: r.last_frame_url, text: "last frame", target: "_blank" }) : null,
      el("p", { class: "prompt", text: p.prompt || "" }),
      el("p", { class: "meta", text: `${j.workflow} · seed ${r.seed ?? p.seed ?? "-"} · ${p.num_frames ?? "?"}f ${p.width ?? "?"}x${p.height ?? "?"} · ${p.steps ?? "?"} steps · cfg ${p.cfg_scale ?? "?"}` }),
      el("p", { class: "meta", text: `${when(j.created_at)} · GPU ${secs(r.timings && r.timings.gpu_s)} · ${money(j.cost_usd)}` }),
      j.error ? el("p", { class: "error", text: j.error.message }) : null,
      el("div", { class: "actions" },
        el("button", { type: "button", text: "Run again", onclick: () => rerun(j.job_id, false) }),
        el("button", { type: "button", text: "Run with a new seed", onclick: () => rerun(j.job_id, true) })));
    box.append(card);
  }
  if (!box.children.length) box.append(el("p", { text: "No job yet." }));
  try {
    const { stories } = await api("/stories?limit=20");
    const sbox = $("#gallery-stories");
    sbox.replaceChildren();
    for (const s of stories) {
      const r = s.result || {};
      sbox.append(el("article", { class: `card ${s.state}` },
        el("header", {}, el("a", { href: `#watch/${s.story_id}`, text: s.story_id }), el("span", { class: "state", text: s.state })),
        r.video_url ? el("video", { src: r.video_url, controls: true, preload: "none" }) : null,
        el("p", { class: "meta", text: `${(s.segments || []).length} segments · ${money(s.cost_usd ?? r.cost_usd)}` })));
    }
    if (!sbox.children.length) sbox.append(el("p", { text: "No story yet." }));
  } catch (err) {
    console.warn(err);
  }
}

async function rerun(id, newSeed) {
  const j = await api(`/jobs/${id}/rerun?new_seed=${newSeed}`, { method: "POST" });
  location.hash = `watch/${j.job_id}`;
}
$("#g-refresh").addEventListener("click", loadGallery);
$("#g-state").addEventListener("change", loadGallery);
$("#g-workflow").addEventListener("change", loadGallery);

// --- fleet --------------------------------------------------------------------------------------
async function loadFleet() {
  const [listed, spend, cleanup] = await Promise.all([api("/instances"), api("/spend"), api("/cleanup?limit=20")]);
  // one instance's view adds provisioning progress per model file
  const instances = await Promise.all(listed.instances.map((i) => api(`/instances/${encodeURIComponent(i.id)}`).catch(() => i)));
  const pct = spend.cap_usd ? Math.min(100, (100 * spend.today_usd) / spend.cap_usd) : 0;
  $("#spend").replaceChildren(
    el("p", { id: "spend-today", text: `Today ${money(spend.today_usd)} of the ${money(spend.cap_usd)} cap · this month ${money(spend.month_usd)} · now ${money(spend.live_per_hour_usd)}/h · projected ${money(spend.projected_usd)}` }),
    el("progress", { id: "spend-bar", max: 100, value: pct }));
  const body = $("#instances tbody");
  body.replaceChildren();
  for (const i of instances) {
    const pct = (done, total) => (total ? Math.round((100 * done) / total) : 0);
    const prov = el("ul", { class: "files" });
    for (const p of i.provisioning || []) {
      prov.append(el("li", { text: `${p.workflow}: ${p.state}, ${pct(p.bytes_done, p.bytes_total)}%, ${p.files_verified}/${p.files.length} verified` }));
      if (p.state !== "ready") for (const f of p.files) prov.append(el("li", { class: "file", text: `${f.name}: ${pct(f.bytes_done, f.bytes_total)}%${f.verified ? " (verified)" : ""}` }));
    }
    const destroy = el("button", { type: "button", class: "destroy", text: "Destroy" });
    destroy.addEventListener("click", async () => {
      if (destroy.dataset.armed !== "1") {
        destroy.dataset.armed = "1";
        destroy.textContent = "Really destroy?";
        return;
      }
      destroy.disabled = true;
      await api(`/instances/${encodeURIComponent(i.id)}`, { method: "DELETE" });
      loadFleet();
    });
    body.append(el("tr", { "data-instance": i.id },
      el("td", { text: i.id }), el("td", { text: i.state }), el("td", { text: i.gpu_name || "-" }),
      el("td", { text: money(i.price_per_hour) }), el("td", { text: secs(i.uptime_s) }),
      el("td", { text: money(i.spent_usd) }), el("td", { text: i.current_job || "-" }),
      el("td", {}, prov.children.length ? prov : "-"), el("td", {}, destroy)));
  }
  $("#no-instances").hidden = instances.length > 0;
  const cbody = $("#cleanup tbody");
  cbody.replaceChildren();
  for (const a of cleanup.actions) {
    cbody.append(el("tr", {}, el("td", { text: when(a.at) }), el("td", { text: `${a.kind}${a.dry_run ? " (dry run)" : ""}${a.ok ? "" : " FAILED"}` }),
      el("td", { text: a.target }), el("td", { text: a.reason })));
  }
  if (!cleanup.actions.length) cbody.append(el("tr", {}, el("td", { colspan: 4, text: "Nothing cleaned up yet." })));
}
$("#fleet-refresh").addEventListener("click", loadFleet);

// --- start --------------------------------------------------------------------------------------
async function start() {
  fetch("/readyz").then((r) => r.json()).then((r) => { $("#sim-banner").hidden = !r.simulated; }).catch(() => {});
  $("#forget-token").hidden = !sessionStorage.getItem(TOKEN_KEY);
  const { workflows, default: dflt, simulated } = await api("/workflows");
  $("#sim-banner").hidden = !simulated;
  state.workflows = workflows;
  const sel = $("#f-workflow");
  for (const w of workflows) {
    sel.append(el("option", { value: w.name, text: w.name }));
    $("#g-workflow").append(el("option", { value: w.name, text: w.name }));
  }
  sel.value = workflows.some((w) => w.name === dflt) ? dflt : (workflows[0] || {}).name;
  if (workflows.length) buildForm(workflows.find((w) => w.name === sel.value));
  document.body.dataset.ready = "1";
  route();
}
start().catch((err) => fieldError("body", `could not load the workflows: ${err.message}`));
