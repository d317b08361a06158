// Gearwork dashboard: plain JavaScript, no dependencies. It follows the
// server over Server-Sent Events (/v1/stream for the overview, a job's
// /events for its progress) and calls the JSON API for actions.
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, text, cls) => {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
};

let token = localStorage.getItem("gearwork-token") || "";
let caps = { dead_letters: false, pause: false };

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

function withToken(url) {
  if (!token) return url;
  return url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token);
}

async function api(method, path, body, extraHeaders) {
  const resp = await fetch(path, { method, body, headers: headers(extraHeaders) });
  if (resp.status === 204) return null;
  const ct = resp.headers.get("Content-Type") || "";
  const data = ct.includes("json") ? await resp.json() : await resp.text();
  if (!resp.ok) {
    const msg = (data && data.detail) || (data && data.title) || resp.statusText;
    throw new Error(msg);
  }
  return data;
}

// ---- overview stream: functions, workers, rates ----

const history = []; // {t, submitted, completed, failed} totals over time
const maxPoints = 300;
let overviewSource = null;

function startOverview() {
  if (overviewSource) overviewSource.close();
  overviewSource = new EventSource(withToken("/v1/stream"));
  overviewSource.addEventListener("open", () => setConn(true));
  overviewSource.addEventListener("error", () => setConn(false));
  overviewSource.addEventListener("overview", (e) => {
    setConn(true);
    render(JSON.parse(e.data));
    loadBatches();
  });
}

function setConn(on) {
  const c = $("#conn");
  c.textContent = on ? "live" : "disconnected";
  c.className = "pill " + (on ? "on" : "off");
}

const lastTotals = new Map(); // function -> {t, completed}

function render(o) {
  caps = o.capabilities || caps;
  const t = new Date(o.time).getTime() / 1000;
  let sub = 0, comp = 0, fail = 0, deadTotal = 0;
  const tbody = $("#functions tbody");
  tbody.replaceChildren();
  for (const f of o.functions) {
    // Failed counts every run that ended without a result, of each kind.
    const failed = f.failed + f.exceptions + (f.timed_out || 0) + (f.vanished || 0);
    sub += f.submitted; comp += f.completed; fail += failed;
    const prev = lastTotals.get(f.name);
    let rate = "";
    if (prev && t > prev.t) rate = ((f.completed - prev.completed) / (t - prev.t)).toFixed(1);
    lastTotals.set(f.name, { t, completed: f.completed });
    const tr = el("tr");
    tr.dataset.function = f.name;
    deadTotal += f.dead_letters || 0;
    const state = f.paused ? (f.paused_until ? "paused until " + new Date(f.paused_until).toLocaleTimeString() : "paused") : "active";
    for (const v of [f.name, f.queued.high, f.queued.normal, f.queued.low, f.running, f.workers,
                     f.submitted, f.completed, failed, f.retried, rate, f.dead_letters || 0]) {
      tr.append(el("td", v));
    }
    tr.append(el("td", state, f.paused ? "paused" : ""));
    const td = el("td");
    if (caps.pause) {
      const path = "/v1/functions/" + encodeURIComponent(f.name) + (f.paused ? "/resume" : "/pause");
      const btn = el("button", f.paused ? "Resume" : "Pause", f.paused ? "resume" : "pause");
      btn.onclick = () => api("POST", path).catch((err) => alert(err.message));
      td.append(btn);
    }
    tr.append(td);
    tbody.append(tr);
  }
  // The overview carries a bounded number of functions (those holding
  // jobs, workers, dead letters or a pause first, then the most submitted).
  const omitted = o.functions_omitted || 0;
  $("#no-functions").hidden = o.functions.length > 0 || omitted > 0;
  $("#functions-omitted").hidden = omitted === 0;
  $("#functions-omitted").textContent = omitted + " more functions not shown (GET /v1/functions?function=NAME shows any).";
  $("#summary").textContent = (o.functions.length + omitted) + " functions, " + o.running + " running, " + o.sessions + " sessions";

  const wbody = $("#workers tbody");
  wbody.replaceChildren();
  for (const w of o.workers) {
    const tr = el("tr");
    for (const v of [w.id, w.addr, w.client_id, w.functions.join(", ")]) tr.append(el("td", v));
    wbody.append(tr);
  }

  history.push({ t, submitted: sub, completed: comp, failed: fail });
  while (history.length > maxPoints) history.shift();
  drawChart();

  $("#dead-unavailable").hidden = caps.dead_letters;
  $("#dead").hidden = !caps.dead_letters;
  $("#dead-refresh").hidden = !caps.dead_letters;
  $("#dead-purge-all").hidden = !caps.dead_letters;
  if (caps.dead_letters && deadTotal !== lastDeadTotal) { lastDeadTotal = deadTotal; loadDead(); }
  renderCounts(o.functions);
}

// ---- job browser: counts by state, a paged list, one job's record ----

const countStates = ["pending", "queued", "scheduled", "retry-wait", "running", "blocked", "waiting", "complete", "failed", "exception", "cancelled", "dead"];

function renderCounts(functions) {
  const tbody = $("#job-counts tbody");
  tbody.replaceChildren();
  for (const f of functions) {
    const tr = el("tr");
    tr.dataset.function = f.name;
    tr.append(el("td", f.name));
    for (const st of countStates) {
      const n = (f.jobs_by_state || {})[st];
      const td = el("td", n ? n : "");
      td.dataset.state = st;
      if (n) {
        const a = el("a", n);
        a.href = "#";
        a.onclick = (e) => { e.preventDefault(); $("#jobs-function").value = f.name; $("#jobs-state").value = st; listJobs(false); };
        td.replaceChildren(a);
      }
      tr.append(td);
    }
    tbody.append(tr);
  }
}

let jobsCursor = "";

async function listJobs(more) {
  const q = new URLSearchParams();
  const fn = $("#jobs-function").value.trim(), st = $("#jobs-state").value;
  if (fn) q.set("function", fn);
  if (st) q.set("state", st);
  q.set("limit", "50");
  if (more && jobsCursor) q.set("cursor", jobsCursor);
  $("#jobs-error").textContent = "";
  try {
    const page = await api("GET", "/v1/jobs?" + q.toString());
    const tbody = $("#jobs tbody");
    if (!more) tbody.replaceChildren();
    for (const j of page.jobs) {
      const tr = el("tr");
      tr.dataset.handle = j.handle;
      for (const v of [j.handle, j.function, j.state, j.attempts || 0,
                       j.submitted_at ? new Date(j.submitted_at).toLocaleString() : "",
                       j.finished_at ? new Date(j.finished_at).toLocaleString() : "", j.last_error || ""]) tr.append(el("td", v));
      tr.children[2].className = "state";
      tr.onclick = () => { location.hash = "job=" + encodeURIComponent(j.handle); };
      tbody.append(tr);
    }
    jobsCursor = page.next_cursor || "";
    $("#jobs-more").hidden = !jobsCursor;
  } catch (err) {
    $("#jobs-error").textContent = err.message;
  }
}

function fmtTime(t) { return t ? new Date(t).toLocaleString() : "–"; }

// detailFor is the job whose record the detail shows or is loading.
let detailFor = "";

// jobFields are the fields of a job's record the dashboard lists, in the
// order of GET /v1/jobs/{handle}, each with how to show its value.
const yesNo = (v) => (v ? "yes" : "no");
const jobFields = [
  ["function"], ["unique"], ["priority"], ["background", yesNo], ["run_at", fmtTime],
  ["progress", (p) => p.numerator + "/" + p.denominator], ["retries"], ["waiting_clients"],
  ["submitted_at", fmtTime], ["started_at", fmtTime], ["finished_at", fmtTime],
  ["attempts"], ["max_attempts"], ["last_error"], ["ordering_key"], ["retry_at", fmtTime],
  ["final", yesNo], ["cancelled_by"], ["cancelled_at", fmtTime], ["retry_of"], ["batch"], ["after"],
];

// showJob shows one job's record; location.hash "#job=HANDLE" links to it.
// Until the record has come, the detail shows no state and no actions (they
// would act on the job shown before), and an answer for a job shown before
// is dropped.
async function showJob(handle) {
  detailFor = handle;
  const box = $("#job-detail");
  box.hidden = false;
  $("#detail-link").textContent = handle;
  $("#detail-link").href = "#job=" + encodeURIComponent(handle);
  $("#detail-error").textContent = "";
  $("#detail-state").textContent = "…";
  $("#detail-state").className = "pill";
  for (const b of ["#detail-cancel", "#detail-retry", "#detail-delete"]) $(b).hidden = true;
  for (const c of ["#detail-fields", "#detail-payload", "#detail-result", "#detail-attempts tbody"]) $(c).replaceChildren();
  let j;
  try {
    j = await api("GET", "/v1/jobs/" + encodeURIComponent(handle));
    if (detailFor !== handle) return;
  } catch (err) {
    if (detailFor !== handle) return;
    $("#detail-state").textContent = "unknown";
    $("#detail-error").textContent = err.message;
    return;
  }
  $("#detail-state").textContent = j.state;
  $("#detail-state").className = "pill " + j.state;
  const dl = $("#detail-fields");
  dl.replaceChildren();
  // Every field of GET /v1/jobs/{handle} but those shown below (payload,
  // result, history) and the state above, under its name (with spaces),
  // as "gearwork admin job" shows them; a field the job does not have is
  // left out.
  for (const [k, show] of jobFields) {
    const v = j[k];
    if (v === undefined || v === null || v === "") continue;
    const dd = el("dd");
    if (k === "retry_of" || k === "after") {
      // Links to the jobs named: the one run again, those waited for.
      for (const h of [].concat(v)) {
        if (dd.childNodes.length) dd.append(" ");
        const a = el("a", h);
        a.href = "#job=" + encodeURIComponent(h);
        dd.append(a);
      }
    } else {
      dd.textContent = show ? show(v) : String(v);
    }
    dl.append(el("dt", k.replaceAll("_", " ")), dd);
  }
  const pv = j.payload_preview_text !== undefined ? j.payload_preview_text : (j.payload_preview ? "(binary, base64) " + j.payload_preview : "");
  // payload_size counts bytes: compare it with the bytes of the preview.
  const shown = j.payload_preview ? atob(j.payload_preview).length : 0;
  $("#detail-payload").textContent = pv + (j.payload_size > shown ? " … (" + j.payload_size + " bytes)" : "");
  $("#detail-result").textContent = j.result_text !== undefined ? j.result_text + (j.result_truncated ? " … (truncated)" : "") :
    (j.result ? "(binary, base64) " + j.result : "");
  const tbody = $("#detail-attempts tbody");
  tbody.replaceChildren();
  (j.history || []).forEach((a, i) => {
    const tr = el("tr");
    for (const v of [i + 1, a.worker || "", fmtTime(a.started_at), fmtTime(a.ended_at), a.outcome, a.error || ""]) tr.append(el("td", v));
    tbody.append(tr);
  });
  const path = "/v1/jobs/" + encodeURIComponent(handle);
  const act = (sel, show, method, url) => {
    const b = $(sel);
    b.hidden = !show;
    b.onclick = async () => {
      $("#detail-error").textContent = "";
      try { await api(method, url); await showJob(handle); listJobs(false); if (caps.dead_letters) loadDead(); }
      catch (err) { $("#detail-error").textContent = err.message; }
    };
  };
  // The API decides who may: a refusal shows its problem detail.
  act("#detail-cancel", !j.final, "DELETE", path);
  // Retry runs a failed, exception or dead job again: a dead letter under
  // its handle, any other as a new job, whose page is shown next.
  const retry = $("#detail-retry");
  retry.hidden = !["failed", "exception", "dead"].includes(j.state);
  retry.onclick = async () => {
    $("#detail-error").textContent = "";
    try {
      const again = await api("POST", path + "/retry");
      if (again.handle === handle) await showJob(handle);
      else location.hash = "job=" + encodeURIComponent(again.handle);
      listJobs(false);
      if (caps.dead_letters) loadDead();
    } catch (err) { $("#detail-error").textContent = err.message; }
  };
  // Delete forgets an ended job's record (and a dead job's dead letter).
  const del = $("#detail-delete");
  del.hidden = !j.final;
  del.onclick = async () => {
    // The record goes for good (and a dead job's dead letter: it cannot
    // be retried afterwards).
    const what = j.state === "dead" && caps.dead_letters
      ? "Delete the record and the dead letter of " + handle + "? It cannot be retried afterwards."
      : "Delete the record of " + handle + "? Its state and result will no longer be shown.";
    if (!confirm(what)) return;
    $("#detail-error").textContent = "";
    try {
      if (j.state === "dead" && caps.dead_letters) await api("DELETE", "/v1/dead-letters/" + encodeURIComponent(handle));
      await api("DELETE", path + "/record");
      await showJob(handle);
      listJobs(false);
      if (caps.dead_letters) loadDead();
    } catch (err) { $("#detail-error").textContent = err.message; }
  };
}

function routeHash() {
  const m = location.hash.match(/^#job=(.+)$/);
  if (m) showJob(decodeURIComponent(m[1]));
}

// drawChart plots per-second rates from the counter history as polylines.
function drawChart() {
  const svg = $("#chart");
  const W = 600, H = 160, pad = 4;
  const series = { submitted: [], completed: [], failed: [] };
  for (let i = 1; i < history.length; i++) {
    const a = history[i - 1], b = history[i];
    const dt = b.t - a.t;
    if (dt <= 0) continue;
    for (const k of Object.keys(series)) series[k].push({ t: b.t, v: Math.max(0, (b[k] - a[k]) / dt) });
  }
  const ns = "http://www.w3.org/2000/svg";
  svg.replaceChildren();
  const all = [].concat(series.submitted, series.completed, series.failed);
  if (all.length === 0) return;
  const tMax = history[history.length - 1].t, tMin = tMax - maxPoints;
  const vMax = Math.max(1, ...all.map((p) => p.v));
  const x = (tt) => pad + ((tt - tMin) / (tMax - tMin)) * (W - 2 * pad);
  const y = (v) => H - pad - (v / vMax) * (H - 2 * pad);
  const label = document.createElementNS(ns, "text");
  label.setAttribute("x", 8); label.setAttribute("y", 14); label.setAttribute("font-size", "11");
  label.setAttribute("fill", "#6b7580");
  label.textContent = "max " + vMax.toFixed(1) + "/s";
  svg.append(label);
  const colors = { submitted: "#2f6fde", completed: "#1f9d55", failed: "#d0342c" };
  for (const [k, pts] of Object.entries(series)) {
    if (pts.length === 0) continue;
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts.map((p) => x(p.t).toFixed(1) + "," + y(p.v).toFixed(1)).join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", colors[k]);
    line.setAttribute("stroke-width", "1.5");
    line.setAttribute("class", "series-" + k);
    svg.append(line);
  }
}

// ---- submit and follow a job ----

let jobSource = null;

function follow(handle) {
  if (jobSource) jobSource.close();
  $("#job").hidden = false;
  $("#job-handle").textContent = handle;
  $("#job-function").textContent = "";
  setJobState("…");
  $("#job-progress").value = 0;
  $("#job-progress-text").textContent = "";
  $("#job-result").textContent = "";
  $("#job-events").replaceChildren();
  const src = new EventSource(withToken("/v1/jobs/" + encodeURIComponent(handle) + "/events"));
  jobSource = src;
  const log = (kind, text) => $("#job-events").append(el("li", kind + (text ? ": " + text : "")));
  src.addEventListener("state", (e) => {
    const d = JSON.parse(e.data);
    $("#job-function").textContent = d.job.function || "";
    setJobState(d.job.state);
    if (d.job.progress) showProgress(d.job.progress.numerator, d.job.progress.denominator);
    log("state", d.job.state);
  });
  src.addEventListener("status", (e) => {
    const d = JSON.parse(e.data);
    setJobState("running");
    showProgress(d.numerator, d.denominator);
    log("status", d.numerator + "/" + d.denominator);
  });
  for (const kind of ["data", "warning"]) {
    src.addEventListener(kind, (e) => {
      const d = JSON.parse(e.data);
      setJobState("running");
      log(kind, d.text !== undefined ? d.text : "(" + atob(d.data || "").length + " bytes)");
    });
  }
  src.addEventListener("retry", (e) => {
    // A run ended without a result and the job runs again: job says why
    // (its last error) and when (retry_at; queued: at once).
    const d = JSON.parse(e.data);
    const j = d.job || {};
    setJobState(j.state || "retry-wait");
    const why = [d.text !== undefined ? d.text : j.last_error];
    if (j.attempts !== undefined) why.push("attempt " + j.attempts + (j.max_attempts > 0 ? " of " + j.max_attempts : ""));
    why.push(j.retry_at ? "runs again at " + fmtTime(j.retry_at) : "runs again");
    log("retry", why.filter(Boolean).join("; "));
  });
  for (const kind of ["complete", "fail", "exception"]) {
    src.addEventListener(kind, (e) => {
      const d = JSON.parse(e.data);
      // The job's record, when kept, names the outcome (dead, cancelled).
      setJobState(d.job ? d.job.state : kind);
      if (kind === "complete") showProgress(1, 1);
      $("#job-result").textContent = d.text !== undefined ? d.text : (d.data ? "(binary, base64) " + d.data : "");
      log(kind, endedWhy(d));
      src.close(); // the stream ends after the final event
    });
  }
  src.addEventListener("error", () => {
    // EventSource reconnects by itself with Last-Event-ID, unless the
    // server refused the stream (an unknown job, a missing token): say why.
    if (src.readyState !== EventSource.CLOSED || jobSource !== src) return;
    api("GET", "/v1/jobs/" + encodeURIComponent(handle)).then(
      (j) => { if (jobSource === src) setJobState(j.state); },
      (err) => { if (jobSource === src) { setJobState("unknown"); log("error", err.message); } });
  });
}

// endedWhy says why a followed job ended as its final event and record
// say: who cancelled it, or after how many attempts it failed and with
// which last error (a WORK_FAIL carries no data of its own).
function endedWhy(d) {
  const j = d.job;
  if (j && j.state === "cancelled") return "cancelled" + (j.cancelled_by ? " by " + j.cancelled_by : "");
  if (j && (j.state === "failed" || j.state === "dead") && d.text === undefined) {
    const n = j.attempts || 0;
    return j.state + " after " + n + (n === 1 ? " attempt" : " attempts") + (j.last_error ? ": " + j.last_error : "");
  }
  return d.text || "";
}

function setJobState(s) {
  const p = $("#job-state");
  p.textContent = s;
  p.className = "pill " + s;
}

function showProgress(n, d) {
  const bar = $("#job-progress");
  bar.max = d > 0 ? d : 1;
  bar.value = d > 0 ? n : 0;
  $("#job-progress-text").textContent = d > 0 ? Math.round((100 * n) / d) + "%" : "";
}

// ---- dead letters ----

let lastDeadTotal = -1; // reload the list when the count changes

// fillTable replaces the rows of the table sel with row(item) for each
// item of the list named key that GET path answers, or with the error.
async function fillTable(sel, path, key, row) {
  const tbody = $(sel + " tbody");
  try {
    const data = await api("GET", path);
    tbody.replaceChildren(...data[key].map(row));
  } catch (err) {
    tbody.replaceChildren(el("tr", err.message));
  }
}

async function loadDead() {
  await fillTable("#dead", "/v1/dead-letters?limit=200", "dead_letters", (d) => {
    const tr = el("tr");
    tr.dataset.handle = d.handle;
    for (const v of [d.handle, d.function, d.attempts, d.error || "", new Date(d.died_at).toLocaleString()]) tr.append(el("td", v));
    const td = el("td");
    const retry = el("button", "Retry", "retry");
    retry.onclick = async () => {
      try { await api("POST", "/v1/dead-letters/" + encodeURIComponent(d.handle) + "/retry"); follow(d.handle); loadDead(); }
      catch (err) { alert(err.message); }
    };
    const purge = el("button", "Purge", "purge");
    purge.onclick = async () => {
      // A purged dead letter cannot be retried afterwards.
      if (!confirm("Purge the dead letter " + d.handle + " of " + d.function + "? It cannot be retried afterwards.")) return;
      try { await api("DELETE", "/v1/dead-letters/" + encodeURIComponent(d.handle)); loadDead(); }
      catch (err) { alert(err.message); }
    };
    td.append(retry, purge);
    tr.append(td);
    return tr;
  });
}

// ---- batches ----

let batchesLoading = false; // one listing at a time, refreshed with the overview

async function loadBatches() {
  if (batchesLoading) return;
  batchesLoading = true;
  try {
    await fillTable("#batches", "/v1/batches?limit=50", "batches", (b) => {
      const tr = el("tr");
      tr.dataset.batch = b.id;
      const done = b.succeeded + b.failed + b.dead;
      const bar = el("progress");
      bar.max = b.total > 0 ? b.total : 1;
      bar.value = b.total > 0 ? done : (b.complete ? 1 : 0);
      const progress = el("td");
      progress.append(bar, " " + done + "/" + b.total);
      tr.append(el("td", b.id), progress);
      for (const v of [b.total, b.pending, b.running, b.succeeded, b.failed, b.dead]) tr.append(el("td", v));
      const state = b.complete ? "complete" : (b.closed ? "closed" : "open");
      const st = el("td");
      st.append(el("span", state, "pill " + (b.complete ? (b.failed + b.dead > 0 ? "failed" : "complete") : "running")));
      tr.append(st);
      const cbs = [];
      for (const [name, cb] of [["on_success", b.on_success], ["on_complete", b.on_complete]]) {
        if (cb) cbs.push(name + " " + cb.function + " (" + (cb.state || (cb.fired ? "fired" : "waiting")) + ")");
      }
      tr.append(el("td", cbs.join(", ")));
      return tr;
    });
  } finally {
    batchesLoading = false;
  }
}

// ---- wiring ----

document.addEventListener("DOMContentLoaded", () => {
  $("#token").value = token;
  $("#token").addEventListener("change", (e) => {
    token = e.target.value.trim();
    localStorage.setItem("gearwork-token", token);
    startOverview();
  });
  $("#submit-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("#submit-error").textContent = "";
    const fn = $("#submit-fn").value.trim();
    try {
      const job = await api("POST", "/v1/functions/" + encodeURIComponent(fn) + "/jobs?priority=" + $("#submit-priority").value,
        $("#submit-payload").value, { "Content-Type": "text/plain" });
      $("#lookup-handle").value = job.handle;
      follow(job.handle);
    } catch (err) {
      $("#submit-error").textContent = err.message;
    }
  });
  $("#lookup-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const h = $("#lookup-handle").value.trim();
    if (h) follow(h);
  });
  $("#dead-refresh").addEventListener("click", loadDead);
  $("#jobs-form").addEventListener("submit", (e) => { e.preventDefault(); listJobs(false); });
  $("#jobs-more").addEventListener("click", () => listJobs(true));
  window.addEventListener("hashchange", routeHash);
  routeHash();
  listJobs(false);
  $("#dead-purge-all").addEventListener("click", async () => {
    // Every function's dead letters go, and cannot be retried afterwards.
    if (!confirm("Purge every dead letter of every function? They cannot be retried afterwards.")) return;
    try { await api("DELETE", "/v1/dead-letters"); loadDead(); } catch (err) { alert(err.message); }
  });
  startOverview();
});
