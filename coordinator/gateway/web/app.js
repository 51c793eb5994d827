// TokenGate control page: plain JS over the gateway's WebSocket protocol
// (docs/protocol.md). No build step, no external assets.
'use strict';

const $ = (id) => document.getElementById(id);
const state = {
  ws: null, role: 'none', nextId: 1, pending: new Map(), retry: 500,
  ops: new Map(), jobs: new Map(), nodes: [], series: [], pollTimer: null,
  outputs: new Map(),  // job_id -> rendered outputs of a finished job (fetched once)
};
const ROLE_RANK = { none: 0, viewer: 1, operator: 2, admin: 3 };
const canControl = () => ROLE_RANK[state.role] >= ROLE_RANK.operator;
const isAdmin = () => ROLE_RANK[state.role] >= ROLE_RANK.admin;

// ---------- token ----------
const params = new URLSearchParams(location.search);
let token = params.get('token') || sessionStorage.getItem('tg_token') || '';
if (params.has('token')) {
  sessionStorage.setItem('tg_token', token);
  // Keep the token out of the address bar and history.
  params.delete('token');
  const q = params.toString();
  history.replaceState(null, '', location.pathname + (q ? '?' + q : ''));
}
$('token').value = token;
$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('token').value.trim();
  sessionStorage.setItem('tg_token', token);
  if (state.ws) state.ws.close(); else connect();
});

// ---------- transport ----------
function request(cmd, args = {}) {
  return new Promise((resolve, reject) => {
    if (!state.ws || state.ws.readyState !== WebSocket.OPEN) {
      reject({ code: 'unavailable', message: 'not connected' });
      return;
    }
    const id = state.nextId++;
    state.pending.set(id, { resolve, reject });
    state.ws.send(JSON.stringify({ id, cmd, ...args }));
  });
}

function connect() {
  const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
  const ws = new WebSocket(url);
  state.ws = ws;
  ws.onopen = async () => {
    state.retry = 500;
    setConn(true);
    try {
      const hello = await request('hello', token ? { token, protocol: 1 } : { protocol: 1 });
      setRole(hello.role);
      if (hello.role !== 'none') {
        await request('subscribe', { topics: ['job', 'failures', 'nodes', 'ops'] });
        await refresh();
        clearInterval(state.pollTimer);
        state.pollTimer = setInterval(refresh, 1000);
      } else {
        toast('Enter a token to see the cluster', true);
      }
    } catch (err) {
      setRole('none');
      toast(`${err.code}: ${err.message}`, true);
    }
  };
  ws.onmessage = (m) => {
    let msg;
    try { msg = JSON.parse(m.data); } catch { return; }
    if (msg.event) return onEvent(msg.event, msg.data || {});
    const p = state.pending.get(msg.id);
    if (!p) return;
    state.pending.delete(msg.id);
    if (msg.ok) p.resolve(msg.result); else p.reject(msg.error);
  };
  ws.onclose = (e) => {
    setConn(false, e.code === 1008 ? 'refused' : 'disconnected');
    clearInterval(state.pollTimer);
    for (const p of state.pending.values()) p.reject({ code: 'unavailable', message: 'disconnected' });
    state.pending.clear();
    if (state.ws === ws) {
      state.ws = null;
      setTimeout(connect, state.retry);
      state.retry = Math.min(state.retry * 2, 8000);
    }
  };
}

function setConn(on, text) {
  const el = $('conn');
  el.textContent = on ? 'connected' : (text || 'disconnected');
  el.className = 'pill ' + (on ? 'on' : 'off');
}
function setRole(role) {
  state.role = role || 'none';
  $('role').textContent = state.role === 'none' ? 'no role' : state.role;
  $('submit').disabled = !canControl();
}

// ---------- polling + events ----------
async function refresh() {
  try {
    const [stats, ops, nodes, jobs] = await Promise.all([
      request('cluster.stats'), request('op.list'), request('node.list'), request('job.list')]);
    renderStats(stats);
    state.ops = new Map(ops.ops.map((o) => [o.op, o]));
    renderOps();
    state.nodes = nodes.nodes;
    renderNodes();
    for (const j of jobs.jobs) state.jobs.set(j.job_id, j);
    renderJobs();
  } catch (err) {
    if (err && err.code !== 'unavailable') toast(`${err.code}: ${err.message}`, true);
  }
}

function onEvent(topic, d) {
  const jobId = d.job_id ?? d.job;  // strings
  if (topic === 'job' && jobId !== undefined) {
    const prev = state.jobs.get(jobId) || {};
    const wall = d.wall_ms ?? (d.wall_s !== undefined ? d.wall_s * 1000 : prev.wall_ms);
    state.jobs.set(jobId, { ...prev, ...d, job_id: jobId, wall_ms: wall });
    renderJobs();
  } else if (topic === 'ops') {
    // Either the per-second throughput list or one op's pause state.
    for (const o of Array.isArray(d.ops) ? d.ops : [d]) {
      const name = o.op || o.name;
      if (name && state.ops.has(name)) Object.assign(state.ops.get(name), o);
    }
    renderOps();
  } else if (topic === 'nodes') {
    log(`node ${d.node || '?'} ${d.event || d.change || ''}${d.reason ? ` (${d.reason})` : ''}`);
    request('node.list').then((r) => { state.nodes = r.nodes; renderNodes(); }).catch(() => {});
  } else if (topic === 'failures') {
    log(`${d.count || 1} failure(s) in ${d.op || '?'}: ${d.last_error || d.message || ''}`, 'fail');
  } else if (topic === 'gap') {
    log(`(skipped ${d.dropped} events: this page was too slow)`);
    refresh();
  }
}

// ---------- rendering ----------
// Non-finite doubles arrive as {"double": "inf" | "-inf" | "nan"} (docs/protocol.md).
const fmt = (n) => {
  if (n === undefined || n === null) return '–';
  if (typeof n === 'object' && typeof n.double === 'string') return n.double;
  return Number(n).toLocaleString('en-US', { maximumFractionDigits: 1 });
};
// A result value as docs/protocol.md ("Values") writes it: non-finite doubles as
// {"double": "inf"|"-inf"|"nan"}, {"dec": "..."}, {"bytes": "hex"}, lists as arrays, packed
// arrays as {"i64s": [...]} / {"f64s": [...]} (non-finite elements as "inf"|"-inf"|"nan").
// Packed arrays show their first PACKED_SHOWN elements, then the count.
const PACKED_SHOWN = 8;
const fmtPacked = (kind, items) => {
  const shown = items.slice(0, PACKED_SHOWN).map((x) => String(x));
  if (items.length > PACKED_SHOWN) shown.push(`… (${items.length} in all)`);
  return `${kind}[${shown.join(', ')}]`;
};
const fmtValue = (v) => {
  if (v === null || v === undefined) return 'null';
  if (Array.isArray(v)) return `[${v.map(fmtValue).join(', ')}]`;
  if (typeof v === 'object') {
    if (Array.isArray(v.i64s)) return fmtPacked('i64s', v.i64s);
    if (Array.isArray(v.f64s)) return fmtPacked('f64s', v.f64s);
    if (typeof v.double === 'string') return v.double;
    if ('double' in v) return String(v.double);
    if (typeof v.dec === 'string') return v.dec;
    if (typeof v.bytes === 'string') return `<${v.bytes.length / 2} bytes>`;
    if ('int' in v) return String(v.int);
    return JSON.stringify(v);
  }
  return typeof v === 'string' ? JSON.stringify(v) : String(v);
};
const OUTPUTS_SHOWN = 5;
// The first outputs of a finished job, fetched once with job.status.
async function loadOutputs(jobId) {
  state.outputs.set(jobId, '…');
  try {
    const r = await request('job.status', { job_id: jobId, limit: OUTPUTS_SHOWN });
    const parts = (r.outputs || []).map((o) => `${o.name || o.index} = ${
      o.error ? `error ${o.error.code || ''}` : fmtValue(o.value)}`);
    if ((r.outputs_total || 0) > parts.length) parts.push(`… (${r.outputs_total} in all)`);
    state.outputs.set(jobId, parts.join('; ') || '–');
  } catch (err) {
    state.outputs.set(jobId, `(${err.code || 'error'})`);
  }
  renderJobs();
}
// Job ids are decimal strings (64-bit): compare them as BigInt, never as Number.
const byIdDesc = (a, b) => {
  const x = BigInt(a), y = BigInt(b);
  return x === y ? 0 : (x < y ? 1 : -1);
};
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function renderStats(s) {
  // Throughput as the page sees it: completed-token delta between polls (the
  // coordinator's own figure is a short-window rate that can read 0 between
  // batches); the first poll falls back to the coordinator's.
  const now = Date.now();
  let tput = s.throughput_per_s || 0;
  if (state.lastStats && now > state.lastStats.t) {
    tput = Math.max(0, (s.tokens_completed - state.lastStats.done) * 1000 / (now - state.lastStats.t));
  }
  state.lastStats = { t: now, done: s.tokens_completed };
  $('s-nodes').textContent = `${fmt(s.nodes_ready)}${s.nodes_draining ? ` (+${s.nodes_draining} draining)` : ''}`;
  $('s-jobs').textContent = fmt(s.jobs_running);
  $('s-tput').textContent = fmt(Math.round(tput));
  $('s-done').textContent = fmt(s.tokens_completed);
  $('s-failed').textContent = fmt(s.tokens_failed);
  $('s-queued').textContent = fmt(s.queued);
  $('s-inflight').textContent = fmt(s.in_flight);
  $('s-limit').textContent = s.admission_limit ? fmt(s.admission_limit) : 'none';
  // xgboost: "model" or "fallback" (least-outstanding until a model is trusted).
  $('s-placement').textContent = s.scheduler && s.placement && s.placement !== s.scheduler
    ? `${s.scheduler}: ${s.placement}` : (s.scheduler || '–');
  $('s-quarantined').textContent = fmt(s.nodes_quarantined || 0);
  $('s-verify').textContent =
    `${fmt(s.verify_matched || 0)} / ${fmt(s.verify_mismatched || 0)} / ${fmt(s.verify_unverifiable || 0)}`;
  state.series.push({ t: now, v: tput });
  const cutoff = now - 120000;
  while (state.series.length && state.series[0].t < cutoff) state.series.shift();
  drawChart();
}

function button(label, action, key, enabled, cls = '') {
  return `<button class="ctl ${cls}" data-action="${action}" data-key="${esc(key)}"` +
    `${enabled ? '' : ' disabled'}>${label}</button>`;
}

function renderOps() {
  const rows = [];
  for (const o of [...state.ops.values()].sort((a, b) => a.op.localeCompare(b.op))) {
    const st = o.paused ? 'paused' : 'running';
    const lim = o.limits || {};
    const limits = [lim.max_in_flight ? `≤${lim.max_in_flight} in flight` : '',
      lim.max_rate_per_s ? `≤${fmt(lim.max_rate_per_s)}/s` : ''].filter(Boolean).join(', ') || '–';
    const lane = o.effective_weight && o.effective_weight !== o.weight
      ? `${o.weight}→${o.effective_weight}` : o.weight;
    rows.push(`<tr data-op="${esc(o.op)}">
      <td>${esc(o.op)}</td><td>${esc(lane || '')}</td>
      <td data-field="state" class="state-${st}">${st}</td>
      <td>${fmt(o.queued)}</td><td>${fmt(o.running)}</td><td data-field="completed">${fmt(o.completed)}</td>
      <td>${fmt(o.failed)}</td><td>${fmt(o.rate_per_s)}</td>
      <td>${o.mean_run_us ? fmt(o.mean_run_us) + ' µs' : '–'}</td><td>${limits}</td>
      <td>${o.paused ? button('Resume', 'op.resume', o.op, canControl())
    : button('Pause', 'op.pause', o.op, canControl())}${
  button('Drain', 'op.drain', o.op, canControl(), 'danger')}${
  button('Cancel running', 'op.cancel_running', o.op, canControl(), 'danger')}${
  button('Limits…', 'op.limits', o.op, canControl())}</td></tr>`);
  }
  $('ops').tBodies[0].innerHTML = rows.join('') ||
    '<tr><td colspan="11">no operations registered yet</td></tr>';
}

function renderNodes() {
  $('nodes').innerHTML = state.nodes.map((n) => {
    const lanes = (n.lanes || []).map((l) => {
      const u = Math.round((l.utilization || 0) * 100);
      return `<div class="lane"><span>${esc(l.weight)}</span><span>${l.workers} worker${l.workers === 1 ? '' : 's'}</span>
        <div class="bar" title="utilisation"><i style="width:${u}%"></i><span>${u}%</span></div>
        <span>${fmt(l.running)} run · ${fmt(l.queued)} q</span></div>`;
    }).join('');
    const draining = n.state === 'draining';
    return `<div class="node" data-node="${esc(n.node)}"><header><b>${esc(n.node)}</b>
      <span data-field="state" class="state-${esc(n.state)}">${esc(n.state)}</span>
      <span class="btns">${draining ? button('Undrain', 'node.undrain', n.node, canControl())
    : button('Drain', 'node.drain', n.node, canControl() && n.state === 'ready')}${
  button('Evict', 'node.evict', n.node, isAdmin() && n.state !== 'dead', 'danger')}</span></header>
      <div class="meta">pid ${n.pid} · ${fmt(n.in_flight)} in flight · ${fmt(n.completed)} done ·
        heartbeat ${fmt(n.heartbeat_age_ms)} ms · speed ×${fmt(n.speed_factor)}</div>${lanes}</div>`;
  }).join('') || '<p>no nodes connected</p>';
}

function renderJobs() {
  const jobs = [...state.jobs.values()].sort((a, b) => byIdDesc(a.job_id, b.job_id)).slice(0, 50);
  $('jobs').tBodies[0].innerHTML = jobs.map((j) => {
    const pct = j.total ? (100 * (j.done || 0)) / j.total : 0;
    const fpct = j.total ? (100 * ((j.failed || 0) + (j.cancelled || 0))) / j.total : 0;
    return `<tr data-job="${j.job_id}"><td>${j.job_id}</td><td>${esc(j.name || '')}</td>
      <td data-field="state" class="state-${esc(j.state)}">${esc(j.state)}</td>
      <td><div class="bar"><i style="width:${pct}%"></i><i class="fail" style="left:${pct}%;width:${fpct}%"></i>
        <span>${fmt(j.done)} / ${fmt(j.total)} (${pct.toFixed(1)}%)</span></div></td>
      <td>${fmt(j.failed)}</td><td>${fmt(j.cancelled)}</td>
      <td>${j.wall_ms !== undefined ? (j.wall_ms / 1000).toFixed(1) + ' s' : '–'}</td>
      <td data-field="outputs" class="outputs">${esc(state.outputs.get(j.job_id) || '')}</td>
      <td>${j.state === 'running' ? button('Cancel', 'job.cancel', j.job_id, canControl(), 'danger') : ''}</td></tr>`;
  }).join('') || '<tr><td colspan="9">no jobs yet</td></tr>';
  for (const j of jobs) {
    if (j.state && j.state !== 'running' && !state.outputs.has(j.job_id)) loadOutputs(j.job_id);
  }
}

function drawChart() {
  const c = $('chart');
  const dpr = window.devicePixelRatio || 1;
  const w = c.clientWidth || c.width, h = c.clientHeight || c.height;
  if (c.width !== w * dpr) { c.width = w * dpr; c.height = h * dpr; }
  const g = c.getContext('2d');
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  g.clearRect(0, 0, w, h);
  const pad = { l: 60, r: 10, t: 10, b: 20 };
  const max = Math.max(10, ...state.series.map((p) => p.v)) * 1.1;
  const now = Date.now();
  const x = (t) => pad.l + ((t - (now - 120000)) / 120000) * (w - pad.l - pad.r);
  const y = (v) => h - pad.b - (v / max) * (h - pad.t - pad.b);
  g.strokeStyle = '#2a3642'; g.fillStyle = '#8a98a6'; g.font = '11px system-ui'; g.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const v = (max / 4) * i;
    g.beginPath(); g.moveTo(pad.l, y(v)); g.lineTo(w - pad.r, y(v)); g.stroke();
    g.fillText(fmt(Math.round(v)), 4, y(v) + 4);
  }
  g.fillText('-2 min', pad.l, h - 4);
  g.fillText('now', w - pad.r - 22, h - 4);
  if (state.series.length < 2) return;
  g.beginPath();
  state.series.forEach((p, i) => (i ? g.lineTo(x(p.t), y(p.v)) : g.moveTo(x(p.t), y(p.v))));
  g.strokeStyle = '#58a6ff'; g.lineWidth = 2; g.stroke();
  g.lineTo(x(state.series[state.series.length - 1].t), y(0));
  g.lineTo(x(state.series[0].t), y(0));
  g.closePath(); g.fillStyle = 'rgba(88,166,255,0.12)'; g.fill();
}

// ---------- actions ----------
document.addEventListener('click', async (e) => {
  const b = e.target.closest('button[data-action]');
  if (!b || b.disabled) return;
  const action = b.dataset.action, key = b.dataset.key;
  let args;
  if (action.startsWith('op.')) args = { op: key };
  else if (action.startsWith('node.')) args = { node: key };
  else if (action === 'job.cancel') args = { job_id: key };  // ids stay strings
  if (action === 'op.limits') {
    const cur = (state.ops.get(key) || {}).limits || {};
    const inflight = prompt(`Max in flight for ${key} (0 = unlimited)`, cur.max_in_flight || 0);
    if (inflight === null) return;
    const rate = prompt(`Max rate per second for ${key} (0 = unlimited)`, cur.max_rate_per_s || 0);
    if (rate === null) return;
    args.max_in_flight = Number(inflight); args.max_rate_per_s = Number(rate);
  }
  if ((action === 'node.evict' || action === 'op.cancel_running') &&
      !confirm(`${action} ${key}?`)) return;
  b.disabled = true;
  try {
    const r = await request(action, args);
    if (r.op && typeof r.op === 'object') { state.ops.set(r.op.op, r.op); renderOps(); }
    if (r.node && typeof r.node === 'object') {
      state.nodes = state.nodes.map((n) => (n.node === r.node.node ? r.node : n)); renderNodes();
    }
    const detail = r.dropped !== undefined ? ` (${r.dropped} queued tokens dropped)`
      : r.cancelled !== undefined ? ` (${r.cancelled} cancelled)`
        : r.requeued !== undefined ? ` (${r.requeued} requeued)` : '';
    toast(`${action} ${key}: ok${detail}`);
    log(`${action} ${key}${detail}`);
  } catch (err) {
    toast(`${action} ${key}: ${err.code}: ${err.message}`, true);
  } finally {
    b.disabled = false;
  }
});

$('job-json').value = JSON.stringify({
  name: 'leibniz-demo',
  tokens: [{ op: 'leibniz.term', repeat: 10000, args: [{ value: 0, step: 1 }] }],
}, null, 2);
$('submit').addEventListener('click', async () => {
  let job;
  try { job = JSON.parse($('job-json').value); } catch (err) { toast(`invalid JSON: ${err.message}`, true); return; }
  try {
    const r = await request('submit', { job });
    toast(`submitted job ${r.job_id}`);
    refresh();
  } catch (err) { toast(`submit: ${err.code}: ${err.message}`, true); }
});

function log(text, cls = '') {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  if (cls) li.className = cls;
  const ol = $('log');
  ol.prepend(li);
  while (ol.children.length > 100) ol.lastChild.remove();
}

function toast(text, err = false) {
  const d = document.createElement('div');
  d.textContent = text;
  if (err) d.className = 'err';
  $('toast').append(d);
  setTimeout(() => d.remove(), 4000);
}

window.addEventListener('resize', drawChart);
setRole('none');
connect();
