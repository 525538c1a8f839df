// sortline officer console (docs/console.md). Plain ES2020, no dependencies; served under a
// strict CSP, so no inline code or styles, and anything from the server goes in as text only.
'use strict';

const $ = (sel) => document.querySelector(sel);

// Builds an element; strings among the children become text nodes (never markup).
function h(tag, props, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v == null) continue;
    if (k === 'text') e.textContent = v;
    else if (k === 'class') e.className = v;
    else if (k === 'data') Object.assign(e.dataset, v);
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

// Sets text only when it changed, so a once-a-second refresh leaves the DOM alone.
function setText(e, t) { if (e.textContent !== t) e.textContent = t; }
function setData(e, k, v) { v = v == null ? '' : String(v); if (e.dataset[k] !== v) e.dataset[k] = v; }
const str = (v) => (v == null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v));
const secs = (ms) => (Math.max(0, ms) / 1000).toFixed(1) + ' s';
const clock = (wallMs) => (wallMs ? new Date(wallMs).toLocaleTimeString() : '—');
const when = (wallMs) => (wallMs ? new Date(wallMs).toLocaleString() : '—');

function say(sel, text, kind) {
  const e = $(sel);
  e.textContent = text;
  e.className = 'status' + (kind ? ' ' + kind : '');
}

// ---- state ----------------------------------------------------------------------------------

const S = {
  user: null, role: null, csrf: null,
  es: null, esOpened: false, esRetry: null,
  screen: 'review',
  reviews: [],          // open reviews in line order: {r, deadline, t, expired}
  closed: new Set(),    // reviews known closed, so a late answer cannot bring one back
  current: null,        // review id on screen
  busy: null,           // review id whose verdict is in flight
  resync: null,
  alarms: [],
  flashTimer: null,
};

// What the role may do (the server enforces it anyway; the page only avoids dead buttons).
function can(what) {
  const r = S.role;
  if (what === 'decide') return r === 'officer' || r === 'supervisor';
  if (what === 'inspect') return r === 'inspector' || r === 'supervisor';
  if (what === 'supervise') return r === 'supervisor';
  return false;
}

// ---- HTTP -----------------------------------------------------------------------------------

async function api(method, path, body) {
  const opt = { method, headers: {}, credentials: 'same-origin' };
  if (method === 'POST') {
    opt.headers['Content-Type'] = 'application/json';
    if (S.csrf) opt.headers['X-CSRF-Token'] = S.csrf;
    opt.body = JSON.stringify(body || {});
  }
  let res;
  try {
    res = await fetch(path, opt);
  } catch (e) {
    return { ok: false, status: 0, data: { error: 'no answer from the console (' + e.message + ')' } };
  }
  let data = {};
  try { data = await res.json(); } catch (_) { /* not JSON: keep {} */ }
  if (res.status === 401 && S.user && path !== '/login') toLogin('session ended: log in again');
  // A stale CSRF token (403): fetch the session's token again for the next try.
  if (res.status === 403 && S.user) api('GET', '/api/me').then((m) => { if (m.ok) S.csrf = m.data.csrf; });
  return { ok: res.ok, status: res.status, data };
}

const why = (res) => (res.data && typeof res.data.error === 'string' ? res.data.error : 'HTTP ' + res.status);

// ---- login, session, navigation -------------------------------------------------------------

function toLogin(message) {
  closeEvents();
  Object.assign(S, { user: null, role: null, csrf: null, reviews: [], current: null, busy: null });
  S.closed.clear();
  const who = $('#whoami');
  if (who) who.remove();
  $('#app').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = message || '';
  $('#login-user').focus();
}

function start(me) {
  Object.assign(S, { user: me.user, role: me.role, csrf: me.csrf });
  $('#login').hidden = true;
  $('#app').hidden = false;
  // Created only now: #whoami exists exactly while there is a session.
  $('#whoami-slot').replaceChildren(h('span', { id: 'whoami', text: `${me.user} (${me.role})` }));
  applyRole();
  renderQueue();
  renderCurrent(true);
  connectEvents();
  syncReviews();
  api('GET', '/api/line').then((res) => { if (res.ok) onLine(res.data); });
  show('review');
}

function applyRole() {
  const gate = {
    decide: ['#verdict-release', '#verdict-inspect', '#verdict-hold'],
    inspect: ['#desk-outcome', '#desk-note', '#desk-submit'],
    supervise: ['#target-id', '#target-by', '#target-value', '#target-reason', '#target-expires', '#target-add',
      '#rate-sample-green', '#rate-sample-red', '#rate-review-green', '#rate-review-red', '#rate-window',
      '#rates-save', '#line-stop', '#line-start'],
  };
  for (const [what, sels] of Object.entries(gate)) {
    for (const sel of sels) {
      const e = $(sel);
      e.disabled = !can(what);
      e.title = can(what) ? '' : `your role (${S.role}) may not do this`;
    }
  }
  updateVerdictButtons();
}

function show(screen) {
  S.screen = screen;
  for (const s of ['review', 'line', 'desk', 'supervision']) {
    $('#screen-' + s).hidden = s !== screen;
    $('#nav-' + s).classList.toggle('active', s === screen);
  }
  if (screen === 'review') draw(); // the canvas had no size while hidden
  if (screen === 'supervision') loadSupervision();
  if (screen === 'desk') $('#desk-waybill').focus();
}

$('#login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const user = $('#login-user').value.trim();
  const password = $('#login-password').value;
  $('#login-submit').disabled = true;
  $('#login-error').textContent = '';
  const res = await api('POST', '/login', { user, password });
  $('#login-submit').disabled = false;
  if (!res.ok) {
    $('#login-error').textContent = res.status === 429 ? 'too many attempts, wait a few minutes: ' + why(res) : why(res);
    return;
  }
  $('#login-password').value = '';
  start(res.data);
});

$('#logout').addEventListener('click', async () => {
  await api('POST', '/logout', {});
  toLogin('logged out');
});

for (const b of document.querySelectorAll('.nav button')) b.addEventListener('click', () => show(b.dataset.screen));

// ---- server-sent events ---------------------------------------------------------------------

function closeEvents() {
  if (S.es) S.es.close();
  clearTimeout(S.esRetry);
  Object.assign(S, { es: null, esOpened: false });
  setConn(false);
}

function setConn(up) {
  const c = $('#conn');
  c.className = 'conn ' + (up ? 'up' : 'down');
  c.textContent = up ? 'live' : 'reconnecting…';
}

function connectEvents() {
  if (S.es) S.es.close();
  const es = new EventSource('/events');
  S.es = es;
  const on = (name, f) => es.addEventListener(name, (e) => {
    let data;
    try { data = JSON.parse(e.data); } catch (_) { return; }
    f(data);
  });
  es.addEventListener('open', () => {
    setConn(true);
    // Events may have been missed while away: the queue comes again from the server.
    if (S.esOpened) syncReviews();
    S.esOpened = true;
  });
  es.addEventListener('error', () => {
    setConn(false);
    if (es.readyState !== EventSource.CLOSED || S.es !== es) return; // EventSource retries by itself
    // Refused outright (401, 5xx): EventSource gives up. A 401 on /api/me goes back to login;
    // anything else, try again in a while.
    S.es = null;
    api('GET', '/api/me').then((res) => {
      if (!S.user || res.status === 401) return;
      if (res.ok) S.csrf = res.data.csrf;
      S.esRetry = setTimeout(connectEvents, 3000);
    });
  });
  on('review', onReview);
  on('review_closed', onReviewClosed);
  on('line', onLine);
  on('alarm', onAlarm);
}

// ---- review queue ---------------------------------------------------------------------------

const findQ = (id) => S.reviews.find((q) => q.r.review === id);
const currentQ = () => (S.current == null ? null : findQ(S.current));

// Line order: oldest parcel (lowest serial) first, as the server lists them.
function insertInOrder(q) {
  const i = S.reviews.findIndex((x) => x.r.serial > q.r.serial);
  if (i < 0) S.reviews.push(q); else S.reviews.splice(i, 0, q);
}

function refresh(q, r, now) {
  q.r = r;
  q.t = now;
  q.deadline = now + (r.remaining_ms || 0);
  q.expired = !(r.remaining_ms > 0);
}

function onReview(r) {
  if (S.closed.has(r.review)) return;
  const now = performance.now();
  let q = findQ(r.review);
  if (q) refresh(q, r, now);
  else { q = {}; refresh(q, r, now); insertInOrder(q); }
  queueChanged(r.review === S.current);
}

function onReviewClosed(c) {
  const q = findQ(c.review);
  if (q && c.outcome === 'late' && c.review === S.current) cutoffPassed(q);
  removeReview(c.review);
}

async function syncReviews() {
  const started = performance.now();
  const res = await api('GET', '/api/reviews');
  if (!res.ok || !S.user) return;
  const now = performance.now();
  const byId = new Map(S.reviews.map((q) => [q.r.review, q]));
  const listed = [];
  for (const r of res.data.reviews || []) {
    if (S.closed.has(r.review)) continue;
    const q = byId.get(r.review) || {};
    byId.delete(r.review);
    refresh(q, r, now);
    listed.push(q);
  }
  S.reviews = listed;
  // Reviews that came by event while the request was out keep their place; older ones are gone.
  for (const q of byId.values()) if (q.t > started) insertInOrder(q);
  queueChanged(true);
}

function removeReview(id) {
  S.closed.add(id);
  if (S.closed.size > 5000) S.closed = new Set([...S.closed].slice(-1000));
  S.reviews = S.reviews.filter((q) => q.r.review !== id);
  queueChanged(false);
}

// The next review to show: the oldest one still before its cut-off.
function nextReview() {
  const q = S.reviews.find((x) => !x.expired);
  return q ? q.r.review : null;
}

function queueChanged(currentUpdated) {
  if (!currentQ()) setCurrent(nextReview()); // closed or none yet: the oldest one waiting
  else if (currentUpdated) renderCurrent(false);
  renderQueue();
}

function setCurrent(id) {
  const changed = id !== S.current;
  S.current = id;
  if (changed) {
    // A new parcel starts at the whole image with its flagged regions shown; grey/colour,
    // inverse and levels are the officer's preference and stay.
    Object.assign(V, { zoom: 1, panX: 0, panY: 0, regions: true });
    $('#tool-regions').checked = true;
  }
  renderCurrent(changed);
  renderQueue();
}

// Queue entries are kept by review id and only moved, so a click in progress is not lost.
const queueEls = new Map();
function renderQueue() {
  const box = $('#review-queue');
  const live = new Set();
  let prev = null;
  for (const q of S.reviews) {
    const id = q.r.review;
    live.add(id);
    let li = queueEls.get(id);
    if (!li) {
      li = h('li', { class: 'queue-item', tabindex: '0' },
        h('span', { class: 't' }), h('span', { class: 'w' }), h('span', { class: 'm' }));
      li.addEventListener('click', () => setCurrent(id));
      li.addEventListener('keydown', (e) => { if (e.key === 'Enter') setCurrent(id); });
      queueEls.set(id, li);
    }
    setData(li, 'review', id);
    setData(li, 'tracking', q.r.tracking);
    setData(li, 'waybill', q.r.waybill);
    setText(li.children[1], q.r.waybill || '—');
    setText(li.children[2], `T${q.r.tracking} · ${q.r.channel || ''}`);
    li.classList.toggle('current', id === S.current);
    li.classList.toggle('expired', !!q.expired);
    li.classList.toggle('green', q.r.channel === 'green');
    li.classList.toggle('red', q.r.channel === 'red');
    q.timeEl = li.children[0];
    const want = prev ? prev.nextSibling : box.firstChild;
    if (want !== li) box.insertBefore(li, want);
    prev = li;
  }
  for (const [id, li] of queueEls) if (!live.has(id)) { li.remove(); queueEls.delete(id); }
  $('#queue-count').textContent = S.reviews.length ? String(S.reviews.length) : '';
  tick();
}

// Countdowns: decremented locally every 100 ms from the last remaining_ms the server gave.
function tick() {
  const now = performance.now();
  let passed = null;
  for (const q of S.reviews) {
    const left = q.deadline - now;
    if (left <= 0 && !q.expired) {
      q.expired = true;
      if (q.r.review === S.current && S.busy !== q.r.review) passed = q; // else the answer tells
      // The server's review_closed should follow; if the review is still open (a stopped belt
      // moved the cut-off), the server's list says so.
      if (!S.resync) S.resync = setTimeout(() => { S.resync = null; if (S.user) syncReviews(); }, 2500);
      if (queueEls.has(q.r.review)) queueEls.get(q.r.review).classList.add('expired');
    }
    if (q.timeEl) {
      setText(q.timeEl, q.expired ? 'late' : secs(left));
      q.timeEl.className = 't' + (q.expired || left < 5000 ? ' late' : left < 10000 ? ' soon' : '');
    }
  }
  const cd = $('#review-countdown');
  const cur = currentQ();
  if (cur) {
    const left = cur.deadline - now;
    setText(cd, cur.expired ? 'passed' : secs(left));
    cd.className = 'countdown' + (cur.expired || left < 5000 ? ' late' : left < 10000 ? ' soon' : '');
  } else setText(cd, '–');
  // Past the cut-off locally: say so and move on (outside the loop: this re-renders the queue).
  if (passed) { cutoffPassed(passed); setCurrent(nextReview()); }
}
setInterval(tick, 100);

function cutoffPassed(q) {
  const text = `cut-off passed: parcel went to hold — ${q.r.waybill} (T${q.r.tracking})`;
  say('#review-status', text, 'alert');
  const f = $('#review-flash');
  f.textContent = 'cut-off passed: parcel went to hold';
  f.hidden = false;
  clearTimeout(S.flashTimer);
  S.flashTimer = setTimeout(() => {
    f.hidden = true;
    const st = $('#review-status');
    if (st.textContent === text) st.className = 'status err'; // keep the words, drop the alarm colour
  }, 4000);
}

// ---- current review -------------------------------------------------------------------------

function renderCurrent(changed) {
  const box = $('#review-current');
  const q = currentQ();
  if (!q) {
    for (const k of ['review', 'tracking', 'boot', 'serial', 'waybill']) setData(box, k, '');
    setData(box, 'imageLoaded', 'none');
    $('#review-empty').hidden = false;
    $('#review-body').hidden = true;
    Object.assign(V, { src: null, key: '' });
    updateVerdictButtons();
    return;
  }
  const r = q.r;
  for (const k of ['review', 'tracking', 'boot', 'serial', 'waybill']) setData(box, k, r[k]);
  $('#review-empty').hidden = true;
  $('#review-body').hidden = false;
  renderManifest(r);
  loadImage(r, changed);
  updateVerdictButtons();
  draw();
}

function renderManifest(r) {
  const m = r.manifest || {};
  $('#manifest-waybill').textContent = r.waybill || '';
  const kv = $('#manifest-fields');
  kv.replaceChildren();
  const add = (k, v, cls) => kv.append(h('dt', { text: k }), h('dd', { class: cls, text: v == null || v === '' ? '—' : String(v) }));
  add('waybill', r.waybill, 'mono');
  add('list no', m.list_no, 'mono');
  add('version', m.version);
  const ch = r.channel || m.channel;
  kv.append(h('dt', { text: 'channel' }), h('dd', {}, h('span', { class: 'badge ch-' + ch, text: ch || '—' })));
  add('status', m.status, m.status && m.status !== 'accepted' ? 'warn' : null);
  add('consignor', m.consignor);
  add('consignee', m.consignee);
  add('country', m.country, 'mono');
  const g = m.gross_weight_g, w = r.measured_weight_g;
  let weight = `${g == null ? '—' : g + ' g'} declared · ${w == null ? 'not weighed' : w + ' g measured'}`;
  if (g != null && w != null) {
    const d = w - g;
    weight += ` (${d >= 0 ? '+' : ''}${d} g${g ? `, ${d >= 0 ? '+' : ''}${((100 * d) / g).toFixed(1)} %` : ''})`;
  }
  add('weight', weight);
  if (m.licence_required) add('licence', 'required', 'warn');
  if (m.platform_targeted) add('platform', 'targeted by the platform', 'warn');

  const money = (minor, cur) => `${(Number(minor) / 100).toFixed(2)} ${cur || ''}`.trim();
  const items = Array.isArray(m.items) ? m.items : [];
  $('#manifest-items tbody').replaceChildren(...items.map((it) => h('tr', { class: 'item' },
    h('td', { text: str(it.name) }), h('td', { text: str(it.hs_code) }),
    h('td', { class: 'num', text: str(it.quantity) }), h('td', { class: 'num', text: money(it.value_minor, it.currency) }))));
  const curs = new Set(items.map((it) => it.currency));
  const total = items.reduce((s, it) => s + Number(it.value_minor || 0), 0);
  $('#manifest-items tfoot').replaceChildren(items.length && curs.size === 1
    ? h('tr', {}, h('td', { text: `total (${items.length} items)`, colspan: '3' }), h('td', { class: 'num', text: money(total, [...curs][0]) }))
    : h('tr', {}, h('td', { colspan: '4', text: items.length ? '' : 'no items declared' })));

  const list = (sel, xs, none) => $(sel).replaceChildren(...(xs.length ? xs : [none]).map((x) => h('li', { text: str(x) })));
  list('#review-reasons', r.reasons || [], 'none given');
  const flags = (r.flags || []).map(str);
  for (const reg of r.regions || []) if (!flags.includes(reg.flag)) flags.push(reg.flag);
  list('#review-flags', flags, 'no pre-screen flag');
}

function updateVerdictButtons() {
  const q = currentQ();
  const off = !can('decide') || !q || q.expired || S.busy === (q && q.r.review);
  for (const id of ['#verdict-release', '#verdict-inspect', '#verdict-hold']) $(id).disabled = off;
}

async function verdict(v) {
  const q = currentQ();
  if (!q || q.expired || !can('decide') || S.busy === q.r.review) return;
  const r = q.r;
  S.busy = r.review;
  updateVerdictButtons();
  const res = await api('POST', `/api/reviews/${encodeURIComponent(r.review)}/verdict`,
    { verdict: v, image_sha256: r.image_sha256 == null ? null : r.image_sha256 });
  S.busy = null;
  const what = `${r.waybill} (T${r.tracking})`;
  if (res.ok) {
    say('#review-status', `${v}: ${res.data.status || 'accepted'} — ${what}`, 'ok');
    removeReview(r.review);
  } else if (res.status === 409) {
    // Closed by the line (cut-off passed, another verdict, other image): nothing more to do here.
    say('#review-status', `${v} refused by the line: ${why(res)} — ${what}`, 'err');
    removeReview(r.review);
  } else {
    say('#review-status', `${v} not taken: ${why(res)} — ${what}`, 'err');
  }
  updateVerdictButtons();
}

for (const b of document.querySelectorAll('.verdict')) b.addEventListener('click', () => verdict(b.dataset.verdict));

// ---- X-ray viewer ---------------------------------------------------------------------------

// The view: zoom (1 = fit), pan in CSS px, grey-level mapping, and the loaded image's pixels.
const V = { zoom: 1, panX: 0, panY: 0, contrast: 1, level: 128, inverse: false, regions: true,
  mode: 'colour', src: null, proc: document.createElement('canvas'), key: '', drag: null, queued: false };

function loadImage(r, changed) {
  const box = $('#review-current');
  const note = $('#review-noimage');
  if (!r.image_sha256 || !r.image) {
    Object.assign(V, { src: null, key: '' });
    note.textContent = 'no X-ray image on this line';
    note.hidden = false;
    setData(box, 'imageLoaded', 'none');
    return;
  }
  const url = V.mode === 'grey' ? r.image.grey : r.image.colour;
  const key = `${r.review} ${url}`;
  if (key === V.key && !changed && box.dataset.imageLoaded !== 'error') return; // loaded or on its way
  V.key = key;
  V.src = null;
  note.hidden = true;
  setData(box, 'imageLoaded', 'false');
  if (typeof url !== 'string' || !url.startsWith('/api/images/')) { imageFailed('unexpected image address'); return; }
  const img = new Image();
  img.onload = () => {
    if (V.key !== key) return; // another review or mode took over meanwhile
    V.proc.width = img.naturalWidth;
    V.proc.height = img.naturalHeight;
    const cx = V.proc.getContext('2d', { willReadFrequently: true });
    cx.drawImage(img, 0, 0);
    V.src = cx.getImageData(0, 0, img.naturalWidth, img.naturalHeight);
    applyLevels();
    draw();
    setData(box, 'imageLoaded', 'true');
  };
  img.onerror = () => { if (V.key === key) imageFailed('image not available (the review may have closed)'); };
  img.src = url;
}

function imageFailed(text) {
  const note = $('#review-noimage');
  note.textContent = text;
  note.hidden = false;
  setData($('#review-current'), 'imageLoaded', 'error');
}

// Window level and contrast per pixel, out = clamp((v - level) * contrast + 128), through a
// 256-entry table so a slider drag stays smooth.
function applyLevels() {
  if (!V.src) return;
  const lut = new Uint8ClampedArray(256);
  for (let v = 0; v < 256; v++) {
    const o = Math.min(255, Math.max(0, (v - V.level) * V.contrast + 128));
    lut[v] = V.inverse ? 255 - o : o;
  }
  const s = V.src.data;
  const out = new ImageData(V.src.width, V.src.height);
  const d = out.data;
  for (let i = 0; i < s.length; i += 4) {
    d[i] = lut[s[i]]; d[i + 1] = lut[s[i + 1]]; d[i + 2] = lut[s[i + 2]]; d[i + 3] = s[i + 3];
  }
  V.proc.getContext('2d').putImageData(out, 0, 0);
}

// Where the image sits on the canvas: scale and top-left corner, in CSS px.
function geom(cw, ch) {
  const w = V.src.width, hh = V.src.height;
  const s = Math.min(cw / w, ch / hh) * V.zoom;
  return { s, ox: (cw - w * s) / 2 + V.panX, oy: (ch - hh * s) / 2 + V.panY };
}

function draw() {
  const cv = $('#review-image');
  const dpr = window.devicePixelRatio || 1;
  const cw = cv.clientWidth, ch = cv.clientHeight;
  if (!cw || !ch) return;
  if (cv.width !== Math.round(cw * dpr) || cv.height !== Math.round(ch * dpr)) {
    cv.width = Math.round(cw * dpr);
    cv.height = Math.round(ch * dpr);
  }
  const cx = cv.getContext('2d');
  cx.setTransform(dpr, 0, 0, dpr, 0, 0);
  cx.fillStyle = '#111';
  cx.fillRect(0, 0, cw, ch);
  const q = currentQ();
  if (!V.src || !q) return;
  const g = geom(cw, ch);
  cx.imageSmoothingEnabled = g.s < 2; // zoomed in, officers want to see the real pixels
  cx.drawImage(V.proc, g.ox, g.oy, V.src.width * g.s, V.src.height * g.s);
  if (!V.regions) return;
  // Regions are in the review's image pixels; scale if the PNG has another size.
  const k = q.r.width ? V.src.width / q.r.width : 1;
  cx.font = '600 12px system-ui, sans-serif';
  cx.textBaseline = 'top';
  for (const reg of q.r.regions || []) {
    const x = g.ox + reg.x * k * g.s, y = g.oy + reg.y * k * g.s;
    cx.strokeStyle = '#ff2a2a';
    cx.lineWidth = 2;
    cx.strokeRect(x, y, reg.width * k * g.s, reg.height * k * g.s);
    const label = str(reg.flag);
    const tw = cx.measureText(label).width + 8;
    const ly = y >= 16 ? y - 16 : y;
    cx.fillStyle = '#ff2a2a';
    cx.fillRect(x, ly, tw, 16);
    cx.fillStyle = '#fff';
    cx.fillText(label, x + 4, ly + 2);
  }
}

// Zooms keeping the image point under (mx, my) in place.
function zoomAt(factor, mx, my) {
  if (!V.src) return;
  const cv = $('#review-image');
  const cw = cv.clientWidth, ch = cv.clientHeight;
  if (mx == null) { mx = cw / 2; my = ch / 2; }
  const g0 = geom(cw, ch);
  const ix = (mx - g0.ox) / g0.s, iy = (my - g0.oy) / g0.s;
  V.zoom = Math.min(32, Math.max(0.5, V.zoom * factor));
  const g1 = geom(cw, ch);
  V.panX += mx - (g1.ox + ix * g1.s);
  V.panY += my - (g1.oy + iy * g1.s);
  draw();
}

function resetView() {
  Object.assign(V, { zoom: 1, panX: 0, panY: 0, contrast: 1, level: 128 });
  $('#tool-contrast').value = '1';
  $('#tool-level').value = '128';
  levelsChanged();
}

// Slider moves arrive faster than frames: recompute once per frame.
function levelsChanged() {
  V.contrast = parseFloat($('#tool-contrast').value) || 1;
  V.level = parseInt($('#tool-level').value, 10);
  if (Number.isNaN(V.level)) V.level = 128;
  V.inverse = $('#tool-inverse').checked;
  $('#tool-contrast-val').textContent = V.contrast.toFixed(2);
  $('#tool-level-val').textContent = String(V.level);
  if (V.queued) return;
  V.queued = true;
  requestAnimationFrame(() => { V.queued = false; applyLevels(); draw(); });
}

function modeChanged() {
  V.mode = $('#tool-mode').value === 'grey' ? 'grey' : 'colour';
  const q = currentQ();
  if (q) loadImage(q.r, false);
  draw();
}

function toggle(sel) {
  const e = $(sel);
  e.checked = !e.checked;
  e.dispatchEvent(new Event('change'));
}

{
  const cv = $('#review-image');
  $('#tool-zoom-in').addEventListener('click', () => zoomAt(1.25));
  $('#tool-zoom-out').addEventListener('click', () => zoomAt(1 / 1.25));
  $('#tool-reset').addEventListener('click', resetView);
  $('#tool-contrast').addEventListener('input', levelsChanged);
  $('#tool-level').addEventListener('input', levelsChanged);
  $('#tool-inverse').addEventListener('change', levelsChanged);
  $('#tool-mode').addEventListener('change', modeChanged);
  $('#tool-regions').addEventListener('change', () => { V.regions = $('#tool-regions').checked; draw(); });
  cv.addEventListener('wheel', (e) => { e.preventDefault(); zoomAt(e.deltaY < 0 ? 1.15 : 1 / 1.15, e.offsetX, e.offsetY); }, { passive: false });
  cv.addEventListener('pointerdown', (e) => {
    if (!V.src || e.button !== 0) return;
    V.drag = { x: e.clientX, y: e.clientY };
    cv.setPointerCapture(e.pointerId);
    cv.classList.add('dragging');
  });
  cv.addEventListener('pointermove', (e) => {
    if (!V.drag) return;
    V.panX += e.clientX - V.drag.x;
    V.panY += e.clientY - V.drag.y;
    V.drag = { x: e.clientX, y: e.clientY };
    draw();
  });
  const endDrag = () => { V.drag = null; cv.classList.remove('dragging'); };
  cv.addEventListener('pointerup', endDrag);
  cv.addEventListener('pointercancel', endDrag);
  new ResizeObserver(() => draw()).observe(cv);
}

// Keyboard on the review screen; not while typing (a scanner or a note must not decide).
document.addEventListener('keydown', (e) => {
  if (!S.user || S.screen !== 'review' || e.ctrlKey || e.metaKey || e.altKey) return;
  const t = e.target;
  if (t instanceof HTMLTextAreaElement || t instanceof HTMLSelectElement || (t && t.isContentEditable)) return;
  if (t instanceof HTMLInputElement && !['checkbox', 'range', 'radio', 'button'].includes(t.type)) return;
  const k = e.key.length === 1 ? e.key.toLowerCase() : e.key;
  const acts = {
    r: () => verdict('release'), i: () => verdict('inspect'), h: () => verdict('hold'),
    '+': () => zoomAt(1.25), '=': () => zoomAt(1.25), '-': () => zoomAt(1 / 1.25), '0': resetView,
    g: () => { const m = $('#tool-mode'); m.value = m.value === 'grey' ? 'colour' : 'grey'; modeChanged(); },
    v: () => toggle('#tool-inverse'), f: () => toggle('#tool-regions'),
  };
  const f = acts[k];
  if (!f) return;
  e.preventDefault();
  if (e.repeat && 'rih'.includes(k)) return; // a held key must not decide twice
  f();
});

// ---- live line ------------------------------------------------------------------------------

function onLine(L) {
  if (!S.user || !L) return;
  renderParcels(Array.isArray(L.parcels) ? L.parcels : []);
  const lanes = L.lanes || {};
  chips('#lane-counts', ['release', 'inspection', 'hold'].map((k) => [k, lanes[k] ?? 0, 'lane-' + k]));
  setText($('#throughput'), `${L.parcels_per_hour ?? 0} parcels/h`);
  const health = L.health || {};
  chips('#health', ['plc', 'scanner', 'xray', 'broker'].map((k) => [k, health[k] || 'none', 'h-' + (health[k] || 'none')]));
  renderStats(L.stats || {}, !!(L.mode && L.mode.shadow));
  renderMode(L.mode);
  if (Array.isArray(L.alarms)) { S.alarms = L.alarms.slice(0, 50); renderAlarms(); }
}

// Small groups of "name value" chips, rebuilt only when their text changes.
function chips(sel, list) {
  const box = $(sel);
  const sig = JSON.stringify(list);
  if (box.dataset.sig === sig) return;
  box.dataset.sig = sig;
  box.replaceChildren(...list.map(([k, v, cls]) => h('span', { class: 'chip ' + cls }, k + ' ', h('b', { text: str(v) }))));
}

const STATS = [['parcels', 'parcels'], ['decided_release', 'released'], ['decided_inspection', 'to inspection'],
  ['decided_hold', 'held'], ['reviews', 'reviews'], ['late', 'late'], ['verdicts_refused', 'verdicts refused'],
  ['missorts', 'missorts'], ['lost', 'lost'], ['no_reads', 'no reads']];
// In shadow mode the decided counts are what the line would have done: nothing was released.
const SHADOW_STATS = { decided_release: 'would release', decided_inspection: 'would inspect', decided_hold: 'would hold' };
function renderStats(st, shadow) {
  const box = $('#line-stats');
  const list = STATS.filter(([k]) => k in st).map(([k, label]) => [(shadow && SHADOW_STATS[k]) || label, st[k]]);
  const sig = JSON.stringify(list);
  if (box.dataset.sig === sig) return;
  box.dataset.sig = sig;
  box.replaceChildren(...list.flatMap(([label, v]) => [h('dt', { text: label }), h('dd', { text: str(v) })]));
}

function modeText(m) {
  if (!m) return '';
  const parts = [];
  if (m.stopped_by) parts.push(`LINE STOPPED by ${str(m.stopped_by)}: every parcel to hold`);
  if (m.safe_mode) parts.push('SAFE MODE: every parcel to hold');
  if (m.plc_events_lost) parts.push('PLC events lost: everything held until the PLC restarts');
  // Decided lanes are what the line would do; nothing is released.
  if (m.shadow) parts.push('SHADOW MODE: decisions are recorded only, every parcel goes to hold');
  return parts.join(' · ');
}

function renderMode(m) {
  const text = modeText(m);
  const lm = $('#line-mode');
  setText(lm, text || 'normal operation');
  lm.classList.toggle('banner-alarm', !!text);
  // The same words on every screen: an officer at the review screen must know the line holds all.
  const b = $('#mode-banner');
  setText(b, text);
  b.hidden = !text;
}

function onAlarm(a) {
  const same = (x) => x.wall_ms === a.wall_ms && x.code === a.code && x.message === a.message;
  if (!S.alarms.some(same)) S.alarms = [a, ...S.alarms].slice(0, 50);
  renderAlarms();
}

function renderAlarms() {
  const box = $('#alarms');
  const sig = JSON.stringify(S.alarms);
  if (box.dataset.sig === sig) return;
  box.dataset.sig = sig;
  if (!S.alarms.length) { box.replaceChildren(h('li', { class: 'empty', text: 'no alarm' })); return; }
  box.replaceChildren(...S.alarms.map((a) => h('li', { class: str(a.severity) },
    h('span', { class: 'time', text: clock(a.wall_ms) }), h('span', { class: 'code', text: str(a.code) }), str(a.message))));
}

// Rows are kept per parcel and updated in place: the Transfer button an officer is aiming at
// survives the once-a-second refresh as long as the parcel stays transferable.
const rowEls = new Map();
function renderParcels(parcels) {
  const tb = $('#line-parcels');
  const live = new Set();
  let prev = null;
  for (const p of parcels) {
    const key = `${p.boot}:${p.serial}:${p.tracking}`;
    live.add(key);
    let tr = rowEls.get(key);
    if (!tr) {
      tr = h('tr', { class: 'parcel' });
      tr.cellsBy = {};
      for (const c of ['tracking', 'waybill', 'channel', 'lane', 'reasons', 'remaining', 'review', 'action']) {
        tr.cellsBy[c] = tr.appendChild(h('td', { class: c === 'remaining' ? 'num' : null }));
      }
      rowEls.set(key, tr);
    }
    updateRow(tr, p);
    const want = prev ? prev.nextSibling : tb.firstChild;
    if (want !== tr) tb.insertBefore(tr, want);
    prev = tr;
  }
  for (const [key, tr] of rowEls) if (!live.has(key)) { tr.remove(); rowEls.delete(key); }
  $('#line-empty').hidden = parcels.length > 0;
}

function updateRow(tr, p) {
  tr.parcel = p;
  const c = tr.cellsBy;
  for (const k of ['tracking', 'boot', 'serial', 'waybill', 'channel']) setData(tr, k, p[k]);
  tr.classList.toggle('green', p.channel === 'green');
  tr.classList.toggle('red', p.channel === 'red');
  tr.classList.toggle('in-review', !!p.in_review);
  setText(c.tracking, 'T' + p.tracking);
  setText(c.waybill, p.waybill || 'no read');
  setText(c.channel, p.channel || '—');
  const lane = p.lane || 'undecided';
  setText(c.lane, lane);
  c.lane.className = 'lane-' + lane;
  setText(c.reasons, (p.reasons || []).map(str).join('; '));
  setText(c.remaining, secs(p.remaining_ms || 0));
  setText(c.review, p.in_review ? 'in review' : '');
  if (p.transferable) {
    if (!tr.button) {
      tr.button = h('button', { type: 'button', class: 'transfer', text: 'Transfer to on-site review' });
      tr.button.addEventListener('click', () => transfer(tr));
      c.action.append(tr.button);
    }
    tr.button.disabled = !can('decide') || !!tr.sending || !!tr.sent;
  } else if (tr.button) {
    tr.button.remove();
    tr.button = null;
  }
  // A supervisor may clear a pre-screen flag on the parcel's image before its cut-off, for an
  // officer who asks (two people: the line refuses one's own).
  const flags = (p.reasons || []).map(str).filter((r) => r.startsWith('x-ray: ')).map((r) => r.slice(7));
  const clearable = flags.length > 0 && !!p.image_sha256 && (p.remaining_ms || 0) > 0 && can('supervise');
  if (clearable && !tr.clear) {
    tr.clear = h('button', { type: 'button', class: 'clear-flag', text: 'Clear flag…' });
    tr.clear.addEventListener('click', () => clearFlag(tr));
    c.action.append(tr.clear);
  } else if (!clearable && tr.clear) {
    tr.clear.remove();
    tr.clear = null;
  }
}

async function clearFlag(tr) {
  const p = tr.parcel;
  const flags = (p.reasons || []).map(str).filter((r) => r.startsWith('x-ray: ')).map((r) => r.slice(7));
  const flag = prompt(`Flag to clear on T${p.tracking} (${flags.join(', ')})`, flags[0] || '');
  if (!flag) return;
  const officer = prompt('Officer who asks for the clearance (user name)');
  if (!officer) return;
  const reason = prompt('Why the flag does not stand');
  if (!reason) return;
  say('#line-status', '', '');
  const body = { boot: p.boot, tracking: p.tracking, serial: p.serial, image_sha256: p.image_sha256, flag, officer, reason };
  const res = await api('POST', '/api/flags/clear', body);
  if (res.ok) say('#line-status', `T${p.tracking}: flag ${flag} cleared (${res.data.status || 'accepted'})`, 'ok');
  else say('#line-status', `clearance on T${p.tracking} ${res.status === 409 ? 'refused by the line' : 'not taken'}: ${why(res)}`, 'err');
}

async function transfer(tr) {
  const p = tr.parcel;
  if (!can('decide') || tr.sending) return;
  tr.sending = true;
  if (tr.button) tr.button.disabled = true;
  say('#line-status', '', ''); // empty until the answer, so the line's words are the answer
  const res = await api('POST', '/api/transfer', { boot: p.boot, tracking: p.tracking, serial: p.serial });
  tr.sending = false;
  tr.sent = res.ok;
  const what = `T${p.tracking} ${p.waybill || ''}`.trim();
  if (res.ok) say('#line-status', `${what}: sent to on-site review (${res.data.status || 'accepted'})`, 'ok');
  else say('#line-status', `transfer of ${what} ${res.status === 409 ? 'refused by the line' : 'not taken'}: ${why(res)}`, 'err');
  if (tr.button) tr.button.disabled = !can('decide') || tr.sent;
}

// ---- inspection desk ------------------------------------------------------------------------

const OUTCOMES = { no_discrepancy: '无误 no discrepancy', discrepancy: '有误 discrepancy, handed over', returned: 'returned' };

async function deskFind() {
  const w = $('#desk-waybill').value.trim();
  const box = $('#desk-parcel');
  if (!w) { box.replaceChildren(h('p', { class: 'empty', text: 'scan or type a waybill' })); return; }
  box.replaceChildren(h('p', { class: 'empty', text: 'looking up ' + w + '…' }));
  const res = await api('GET', '/api/inspection?waybill=' + encodeURIComponent(w));
  if (!res.ok) {
    box.replaceChildren(h('p', { class: 'empty', text: res.status === 404 ? why(res) : 'lookup not answered: ' + why(res) }));
    return;
  }
  const stories = res.data.parcels || [];
  box.replaceChildren(...(stories.length ? stories.map(story) : [h('p', { class: 'empty', text: 'no record of ' + w })]));
}

function story(s) {
  const lane = (l) => h('span', { class: 'lane-' + (l || 'undecided'), text: l || 'not known' });
  const kv = h('dl', { class: 'kv' });
  const add = (k, v) => kv.append(h('dt', { text: k }), h('dd', {}, v));
  add('parcel', `T${s.tracking} (boot ${s.boot}, serial ${s.serial})`);
  add('channel', h('span', { class: 'badge ch-' + str(s.channel), text: s.channel || '—' }));
  add('decided', lane(s.decided));
  add('confirmed', s.confirmed ? lane(s.confirmed) : s.done_wall_ms == null ? 'not known (left the line before this run)' : 'not confirmed');
  add('done', when(s.done_wall_ms));
  const reasons = (s.reasons || []).map((r) => h('li', { text: str(r) }));
  const results = (s.inspection || []).map((i) => h('li', {},
    h('b', { text: OUTCOMES[i.outcome] || str(i.outcome) }),
    ` — ${str(i.officer)}, ${when(i.wall_ms)}${i.note ? ': ' : ''}`, i.note ? str(i.note) : null));
  return h('article', { class: 'story panel', data: { waybill: str(s.waybill), confirmed: str(s.confirmed) } },
    h('div', { class: 'head mono', text: s.waybill || '—' }), kv,
    h('h4', { text: s.decided === 'inspection' ? 'Why it was sent to inspection' : 'Reasons' }),
    h('ul', { class: 'list' }, ...(reasons.length ? reasons : [h('li', { text: 'none recorded' })])),
    h('h4', { text: 'Inspection results' }),
    h('ul', { class: 'list' }, ...(results.length ? results : [h('li', { text: 'none yet' })])));
}

$('#desk-find-form').addEventListener('submit', (e) => { e.preventDefault(); deskFind(); });

$('#desk-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  if (!can('inspect')) return;
  const waybill = $('#desk-waybill').value.trim();
  const outcome = $('#desk-outcome').value;
  const note = $('#desk-note').value.trim();
  say('#desk-status', '', '');
  if (!waybill) { say('#desk-status', 'scan or type the waybill first', 'err'); return; }
  if (outcome !== 'no_discrepancy' && !note) { say('#desk-status', 'a note is required for a discrepancy or a return', 'err'); return; }
  $('#desk-submit').disabled = true;
  const res = await api('POST', '/api/inspection', { waybill, outcome, note: note || null });
  $('#desk-submit').disabled = !can('inspect');
  if (res.ok) {
    say('#desk-status', `${waybill}: ${OUTCOMES[outcome]} recorded (${res.data.status || 'accepted'})`, 'ok');
    $('#desk-note').value = '';
    deskFind();
  } else {
    say('#desk-status', `result for ${waybill} ${res.status === 409 ? 'refused by the line' : 'not taken'}: ${why(res)}`, 'err');
  }
});

// ---- supervision ----------------------------------------------------------------------------

// A target's criterion, `key: value`, whether it comes as {"by": k, "value": v} or {k: v}.
function criterion(c) {
  if (!c || typeof c !== 'object') return str(c);
  if ('by' in c && 'value' in c) return `${str(c.by)}: ${str(c.value)}`;
  return Object.entries(c).map(([k, v]) => `${k}: ${str(v)}`).join(', ');
}

// Expiry: wall-clock ms (a date) when it looks like one, else the line's ms as given.
function expires(t) {
  const v = t.expires_at ?? t.expires_wall_ms;
  if (v == null) return 'never';
  return v > 1e12 ? when(v) : `line ${v} ms`;
}

async function loadSupervision() {
  const res = await api('GET', '/api/supervision');
  if (!res.ok) { say('#supervision-status', 'supervision not loaded: ' + why(res), 'err'); return; }
  const d = res.data;
  const targets = Array.isArray(d.targets) ? d.targets : [];
  $('#targets').replaceChildren(...(targets.length ? targets.map((t) => {
    const rm = h('button', { type: 'button', class: 'small', text: 'Remove' });
    rm.disabled = !can('supervise');
    rm.addEventListener('click', () => removeTarget(t.id));
    return h('tr', { data: { target: str(t.id) } }, h('td', { class: 'mono', text: str(t.id) }), h('td', { text: criterion(t.criterion) }),
      h('td', { text: str(t.author) }), h('td', { text: str(t.reason) }), h('td', { text: expires(t) }), h('td', {}, rm));
  }) : [h('tr', {}, h('td', { colspan: '6', class: 'empty', text: 'no manual target' }))]));

  // Placeholders show what is in force, so an empty field means "leave it".
  const pair = (v, k) => (v && v[k] != null ? String(v[k]) : '');
  $('#rate-sample-green').placeholder = pair(d.sample_rate, 'green');
  $('#rate-sample-red').placeholder = pair(d.sample_rate, 'red');
  $('#rate-review-green').placeholder = pair(d.xray_review_ratio, 'green');
  $('#rate-review-red').placeholder = pair(d.xray_review_ratio, 'red');
  $('#rate-window').placeholder = d.review_window_ms == null ? 'cut-off' : String(d.review_window_ms);
  S.rates = d;

  const rules = $('#rules');
  if (Array.isArray(d.rules)) {
    rules.replaceChildren(...(d.rules.length ? d.rules.map((r) => h('li', {},
      h('b', { class: 'mono', text: str(r && (r.id ?? r.name)) }),
      r && r.action ? ` → ${str(r.action)}` : '', r && r.reason ? ` — ${str(r.reason)}` : '',
      h('pre', { text: JSON.stringify(r) }))) : [h('li', { class: 'empty', text: 'no interception rule' })]));
  } else if (d.rules && d.rules.error) {
    rules.replaceChildren(h('li', { class: 'warn', text: 'rules not readable: ' + str(d.rules.error) }));
  } else {
    rules.replaceChildren(h('li', { class: 'empty', text: 'no interception rule' }));
  }

  const act = Array.isArray(d.activity) ? d.activity : [];
  $('#activity').replaceChildren(...(act.length ? act.map((a) => h('tr', {},
    h('td', { text: str(a.officer) }), ...['verdicts', 'release', 'inspect', 'hold'].map((k) => h('td', { class: 'num', text: str(a[k]) })),
    h('td', { class: 'num', text: secs(a.mean_ms || 0) }))) : [h('tr', {}, h('td', { colspan: '6', class: 'empty', text: 'no verdict yet' }))]));
}

// Runs a supervision action and reloads the screen with the line's answer in the status line.
async function supervise(path, body, what) {
  if (!can('supervise')) return false;
  say('#supervision-status', '', '');
  const res = await api('POST', path, body);
  if (res.ok) say('#supervision-status', `${what}: ${res.data.status || 'accepted'}`, 'ok');
  else say('#supervision-status', `${what} ${res.status === 409 ? 'refused by the line' : 'not taken'}: ${why(res)}`, 'err');
  loadSupervision();
  return res.ok;
}

function removeTarget(id) {
  supervise(`/api/targets/${encodeURIComponent(id)}/remove`, {}, `remove target ${id}`);
}

$('#target-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const exp = $('#target-expires').value.trim();
  const mins = exp === '' ? null : Number(exp);
  if (mins != null && !(Number.isInteger(mins) && mins > 0)) {
    say('#supervision-status', 'expires in: whole minutes, or empty for never', 'err');
    return;
  }
  const body = { target_id: $('#target-id').value.trim(), by: $('#target-by').value,
    value: $('#target-value').value.trim(), reason: $('#target-reason').value.trim(), expires_in_min: mins };
  if (await supervise('/api/targets', body, `add target ${body.target_id}`)) {
    for (const id of ['#target-id', '#target-value', '#target-reason', '#target-expires']) $(id).value = '';
  }
});

$('#rates-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  const num = (sel) => { const v = $(sel).value.trim(); return v === '' ? null : Number(v); };
  const body = {};
  let bad = null;
  // A pair goes whole: the field left empty keeps the value in force.
  const pair = (key, g, r) => {
    const green = num(g), red = num(r);
    if (green == null && red == null) return;
    const cur = (S.rates && S.rates[key]) || {};
    const v = { green: green ?? cur.green, red: red ?? cur.red };
    if (![v.green, v.red].every((x) => typeof x === 'number' && x >= 0 && x <= 1)) bad = `${key}: numbers from 0 to 1`;
    body[key] = v;
  };
  pair('sample_rate', '#rate-sample-green', '#rate-sample-red');
  pair('xray_review_ratio', '#rate-review-green', '#rate-review-red');
  const w = num('#rate-window');
  if (w != null) {
    if (!(Number.isInteger(w) && w >= 1 && w <= 3600000)) bad = 'review window: 1 to 3600000 ms';
    body.review_window_ms = w;
  }
  if (bad) { say('#supervision-status', bad, 'err'); return; }
  if (!Object.keys(body).length) { say('#supervision-status', 'nothing to change: fill a field first', 'err'); return; }
  if (await supervise('/api/rates', body, 'rates')) {
    for (const id of ['#rate-sample-green', '#rate-sample-red', '#rate-review-green', '#rate-review-red', '#rate-window']) $(id).value = '';
  }
});

$('#line-stop').addEventListener('click', () => {
  if (confirm('Stop the line? Every parcel goes to hold from now on.')) supervise('/api/line/stop', {}, 'line stop');
});
$('#line-start').addEventListener('click', () => supervise('/api/line/start', {}, 'line start'));
$('#supervision-refresh').addEventListener('click', loadSupervision);

// ---- boot -----------------------------------------------------------------------------------

(async () => {
  const res = await api('GET', '/api/me');
  if (res.ok) start(res.data);
  else toLogin(res.status === 401 ? '' : 'console not available: ' + why(res));
})();
