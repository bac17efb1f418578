// 云厅 H5 chat simulator: the mini-program chat page in a desktop browser, for demos and tests.
// Served by the backend at /simulator/, so relative URLs hit the backend (same origin).
// #channel picks 小程序 (this file) or 公众号 (simulator-oa.js: oaLogin, oaSay, oaStop).
'use strict';

const $ = (sel) => document.querySelector(sel);

const LABELS = { bot: '智能客服', agent: '人工客服', system: '系统' };
const STATES = {
  bot: '智能客服为您服务',
  queued: '排队中，请稍候…',
  with_agent: '人工客服已接入',
  closed: '本次服务已结束',
};
const CONN = { connecting: '正在连接…', reconnecting: '连接中断，正在重新连接…', open: '', closed: '' };
const PING_MS = 25000;
const MAX_BACKOFF_MS = 30000;

const S = {
  gen: 0,            // bumped on every login, so answers for an old session are ignored
  channel: 'miniapp', // of the current session: 'miniapp' or 'oa'
  person: '',
  token: '',
  expiresAt: 0,
  config: null,
  conversation: null,
  lastId: 0,
  seen: new Set(),   // message ids shown: replies arrive in the POST answer AND on the socket
  unconfirmed: new Set(), // agent replies not yet reported as read
  acked: new Set(),       // ... and those already reported as delivered (page in the background)
  ws: null,
  wsWanted: false,
  attempt: 0,
  retryTimer: 0,
  pingTimer: 0,
  loginInFlight: null,
};

// ---------- HTTP ----------

class ApiError extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

// fetch + JSON; non-2xx becomes an ApiError with the API's {"error": {code, message}}.
async function fetchJson(url, init) {
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    throw new ApiError('网络连接失败，请稍后再试', 'network', 0);
  }
  if (res.ok) return res.json();
  let body = null;
  try { body = await res.json(); } catch (e) { /* not JSON */ }
  const err = body && body.error;
  throw new ApiError((err && err.message) || `请求失败（HTTP ${res.status}）`,
    (err && err.code) || `http_${res.status}`, res.status);
}

const jsonPost = (body, headers) => ({
  method: 'POST',
  headers: Object.assign({ 'Content-Type': 'application/json' }, headers),
  body: JSON.stringify(body),
});

// Mint a wx.login code from the bundled WeChat emulator, then exchange it for our token.
async function loginOnce(person) {
  if (!S.config) S.config = await fetchJson('/simulator/config');
  const base = S.config.emulator_base.replace(/\/$/, '');
  const { code } = await fetchJson(`${base}/_sim/wx_login`,
    jsonPost({ appid: S.config.miniapp_app_id, person }));
  const r = await fetchJson('/miniapp/login', jsonPost({ code }));
  S.token = r.token;
  S.expiresAt = Date.now() + (r.expires_in || 3600) * 1000;
}

// One shared login at a time; a used/invalid code (single-use, 5 min) gets one retry with a new code.
function login() {
  if (!S.loginInFlight) {
    S.loginInFlight = loginOnce(S.person)
      .catch((e) => {
        if (e.code === 'wechat_code_used' || e.code === 'wechat_code_invalid') return loginOnce(S.person);
        throw e;
      })
      .finally(() => { S.loginInFlight = null; });
  }
  return S.loginInFlight;
}

// Authenticated call; on 401 logs in again once and repeats.
async function api(method, path, body) {
  if (!S.token || Date.now() > S.expiresAt - 30000) await login();
  const init = () => (body === undefined
    ? { method, headers: { Authorization: `Bearer ${S.token}` } }
    : jsonPost(body, { Authorization: `Bearer ${S.token}` }));
  try {
    return await fetchJson(path, init());
  } catch (e) {
    if (e.status !== 401) throw e;
    S.token = '';
    await login();
    return fetchJson(path, init());
  }
}

function uuid() {
  if (crypto.randomUUID) return crypto.randomUUID(); // secure contexts only (https, localhost)
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// POST /miniapp/messages; a network error or 5xx is retried once with the SAME client_msg_id
// (the backend processes it once and returns the same result).
async function postMessage(text, clientMsgId) {
  const body = { text, client_msg_id: clientMsgId };
  try {
    return await api('POST', '/miniapp/messages', body);
  } catch (e) {
    if (e.code !== 'network' && !(e.status >= 500)) throw e;
    await new Promise((r) => setTimeout(r, 1000));
    return api('POST', '/miniapp/messages', body);
  }
}

// ---------- rendering ----------

function showError(e) {
  const el = $('#error');
  el.textContent = (e && e.message) || String(e);
  el.hidden = false;
}
function clearError() {
  $('#error').hidden = true;
  $('#error').textContent = '';
}

let noticeTimer = 0;
function showNotice(text) {
  const el = $('#notice');
  el.textContent = text;
  el.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { el.hidden = true; }, 8000);
}

function setConversation(c) {
  S.conversation = c || null;
  const state = (c && c.state) || 'bot';
  const el = $('#state');
  el.dataset.state = state;
  el.dataset.conversationId = (c && c.id) || '';
  el.textContent = STATES[state] || STATES.bot;
}

function setConn(status) {
  const el = $('#conn');
  el.dataset.status = status;
  el.textContent = CONN[status] || '';
}

function scrollDown() {
  const box = $('#messages');
  box.scrollTop = box.scrollHeight;
}

function bubble(msgEl, label, text, meta) {
  if (label) {
    const l = document.createElement('div');
    l.className = 'label';
    l.textContent = label;
    msgEl.append(l);
  }
  const b = document.createElement('div');
  b.className = 'bubble';
  const t = document.createElement('span');
  t.className = 'text';
  t.textContent = text; // never innerHTML: message text is user/agent input
  b.append(t);
  msgEl.append(b);
  if (meta) {
    const m = document.createElement('div');
    m.className = 'meta';
    m.textContent = meta;
    msgEl.append(m);
  }
}

// The bot's one-tap video invitation: opens the backend's H5 video page (the mini-program uses a web-view).
function videoInviteButton(payload) {
  const button = document.createElement('button');
  button.className = 'video-invite';
  button.type = 'button';
  button.textContent = '一键视频办理';
  button.addEventListener('click', () => openVideo(payload.conversation_id));
  return button;
}

function openVideo(conversationId) {
  const id = conversationId || (S.conversation && S.conversation.id);
  if (!id) { showNotice('请先说明您要办理的业务'); return; }
  // Opened at once (a pop-up must come from the click), then pointed at the page with a single-use ticket:
  // the session token never goes in a URL.
  const tab = window.open('about:blank', '_blank');
  api('POST', '/miniapp/tickets', { purpose: 'video_page' }).then((r) => {
    if (tab) tab.location.href = `/h5/video/?conversation_id=${id}&ticket=${encodeURIComponent(r.ticket)}`;
  }, (e) => { if (tab) tab.close(); showError(e); });
}

// Advisor services (docs/advisor.md): a booking link, a document request, a guide card. The mini-program opens
// the same H5 pages in a web-view; here they open in a new tab with a single-use ticket (never the token).
const ADVISOR_CARDS = {
  booking_invite: ['预约客户经理', () => openAdvisorPage('booking.html')],
  document_request: ['上传资料', (p) => openAdvisorPage(`upload.html?request_id=${p.request_id}`)],
  guide: ['打开操作指导', (p) => openAdvisorPage(`guide.html?guide_id=${p.guide_id}`)],
};

function advisorCardButton(payload) {
  const [label, open] = ADVISOR_CARDS[payload.type];
  const button = document.createElement('button');
  button.className = `advisor-card ${payload.type}`;
  button.type = 'button';
  button.textContent = label;
  button.addEventListener('click', () => open(payload));
  return button;
}

function openAdvisorPage(path) {
  const sep = path.includes('?') ? '&' : '?';
  // Opened at once (a pop-up must come from the click), then pointed at the page once the ticket is minted.
  const tab = window.open('about:blank', '_blank');
  api('POST', '/miniapp/tickets', { purpose: 'advisor_page' }).then((r) => {
    if (tab) tab.location.href = `/h5/advisor/${path}${sep}ticket=${encodeURIComponent(r.ticket)}`;
  }, (e) => { if (tab) tab.close(); showError(e); });
}

// The mini-program asks wx.requestSubscribeMessage before booking; here the person taps 允许 on the emulator.
async function grantReminder() {
  const config = S.config;
  if (!config || !config.reminder_template_id) return;
  const base = config.emulator_base.replace(/\/$/, '');
  const who = await fetchJson(`${base}/_sim/identity?appid=${encodeURIComponent(config.miniapp_app_id)}`
    + `&person=${encodeURIComponent(S.person)}`);
  await fetchJson(`${base}/_sim/subscribe_grants`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ appid: config.miniapp_app_id, openid: who.openid, template_id: config.reminder_template_id }),
  });
}

function timeOf(iso) {
  const d = new Date(iso);
  return isNaN(d) ? '' : d.toLocaleTimeString('zh-CN', { hour: '2-digit', minute: '2-digit' });
}

// Server messages: .msg[data-id][data-sender], kept in id order, each id once.
function addMessages(list) {
  const box = $('#messages');
  for (const m of list || []) {
    if (!m || S.seen.has(String(m.id))) continue;
    S.seen.add(String(m.id));
    if (m.sender_kind === 'customer') {
      // our own message echoed on the socket before the POST answered: drop its pending copy
      const p = [...box.querySelectorAll('.msg.pending')].find((el) => el.dataset.text === m.text);
      if (p) p.remove();
    }
    const el = document.createElement('div');
    el.className = 'msg';
    el.dataset.id = m.id;
    el.dataset.sender = m.sender_kind;
    el.dataset.direction = m.direction;
    bubble(el, LABELS[m.sender_kind] || '', m.text, timeOf(m.created_at));
    if (m.payload && m.payload.type === 'video_invite') el.append(videoInviteButton(m.payload));
    if (m.sender_kind === 'agent') S.unconfirmed.add(Number(m.id));
    if (m.payload && ADVISOR_CARDS[m.payload.type]) el.append(advisorCardButton(m.payload));
    const later = [...box.querySelectorAll('.msg[data-id]')].find((x) => Number(x.dataset.id) > Number(m.id));
    box.insertBefore(el, later || box.querySelector('.msg.pending'));
    if (Number(m.id) > S.lastId) S.lastId = Number(m.id);
  }
  box.dataset.lastId = S.lastId;
  box.querySelector('.hint')?.remove();
  scrollDown();
  confirmShown();
}

// ---------- receipts: the agent sees 已送达 / 已读 next to each reply ----------

// Received: `delivered`; on screen (the page is visible): `read`. Over the socket when it is open, else HTTP.
function sendReceipt(status, ids) {
  if (!ids.length || S.channel !== 'miniapp' || !S.token) return;
  const frame = { type: 'receipt', status, message_ids: ids };
  if (S.ws && S.ws.readyState === WebSocket.OPEN) S.ws.send(JSON.stringify(frame));
  else api('POST', '/miniapp/receipts', { status, message_ids: ids }).catch(() => {});
}

function confirmShown() {
  const ids = [...S.unconfirmed];
  if (!ids.length) return;
  if (document.visibilityState === 'visible') {
    S.unconfirmed.clear();
    sendReceipt('read', ids);
    return;
  }
  const fresh = ids.filter((id) => !S.acked.has(id));
  fresh.forEach((id) => S.acked.add(id));
  sendReceipt('delivered', fresh);
}

document.addEventListener('visibilitychange', confirmShown);

// 「回复通知」: the customer allows one subscribe message (wx.requestSubscribeMessage → 允许), recorded by
// WeChat (the emulator) and told to the backend, which may then use it when they are away.
async function allowReplyNotice() {
  if (!S.config) S.config = await fetchJson('/simulator/config');
  const base = S.config.emulator_base.replace(/\/$/, '');
  const template = S.config.reply_template_id;
  const who = await fetchJson(`${base}/_sim/identity?appid=${encodeURIComponent(S.config.miniapp_app_id)}&person=${encodeURIComponent(S.person)}`);
  await fetchJson(`${base}/_sim/subscribe_grants`, jsonPost({ appid: S.config.miniapp_app_id, openid: who.openid, template_id: template }));
  const r = await api('POST', '/miniapp/subscriptions', { results: { [template]: 'accept' } });
  showNotice(`已开启客服回复通知（可用${r.grants[template]}次）`);
}

// Not yet confirmed customer message: .msg.pending[data-pending=<client_msg_id>] (no data-id).
function setPending(clientMsgId, text, failed) {
  const box = $('#messages');
  let el = box.querySelector(`.msg.pending[data-pending="${clientMsgId}"]`);
  if (!el) {
    el = document.createElement('div');
    el.dataset.pending = clientMsgId;
    el.dataset.text = text;
    box.append(el);
  }
  el.className = failed ? 'msg pending failed' : 'msg pending';
  el.replaceChildren();
  bubble(el, '', text, failed ? '发送失败，点一下这条消息重新发送' : '发送中…');
  box.querySelector('.hint')?.remove();
  scrollDown();
  return el;
}

// ---------- chat ----------

async function sendText(text, clientMsgId) {
  if (S.channel === 'oa') { oaSay(text); return; }
  const gen = S.gen;
  const id = clientMsgId || uuid();
  const el = setPending(id, text, false);
  try {
    const res = await postMessage(text, id);
    if (gen !== S.gen) return;
    el.remove();
    addMessages([res.message, ...(res.replies || [])]);
    setConversation(res.conversation);
    clearError();
  } catch (e) {
    if (gen !== S.gen || !el.isConnected) return; // gone: the socket already echoed it
    setPending(id, text, true);
    showError(e);
  }
}

// ---------- WebSocket ----------

function wsUrl(ticket) {
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${proto}//${location.host}/miniapp/ws?ticket=${encodeURIComponent(ticket)}&after_id=${S.lastId}`;
}

// Called with a fresh single-use ticket (reconnect mints one with our token).
function connect(ticket) {
  const ws = new WebSocket(wsUrl(ticket));
  S.ws = ws;
  setConn(S.attempt ? 'reconnecting' : 'connecting');
  ws.onopen = () => {
    if (S.ws !== ws) return;
    S.attempt = 0;
    setConn('open');
    clearInterval(S.pingTimer);
    S.pingTimer = setInterval(() => {
      if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'ping' }));
    }, PING_MS);
  };
  ws.onmessage = (ev) => {
    if (S.ws !== ws) return;
    let f;
    try { f = JSON.parse(ev.data); } catch (e) { return; }
    if (f.type === 'message') addMessages([f.message]);
    else if (f.type === 'conversation') setConversation(f.conversation);
  };
  ws.onclose = () => {
    if (S.ws !== ws) return;
    S.ws = null;
    clearInterval(S.pingTimer);
    scheduleReconnect();
  };
}

function scheduleReconnect() {
  if (!S.wsWanted) { setConn('closed'); return; }
  const wait = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** S.attempt) + Math.random() * 500;
  S.attempt += 1;
  setConn('reconnecting');
  clearTimeout(S.retryTimer);
  S.retryTimer = setTimeout(reconnect, wait);
}

// Before reconnecting, catch up over HTTP: this also logs in again if the token was rejected (401).
async function reconnect() {
  const gen = S.gen;
  let ticket;
  try {
    const data = await api('GET', `/miniapp/messages?after_id=${S.lastId}`);
    if (gen !== S.gen || !S.wsWanted) return;
    setConversation(data.conversation);
    addMessages(data.messages);
    ({ ticket } = await api('POST', '/miniapp/tickets', { purpose: 'socket' }));
    if (gen !== S.gen || !S.wsWanted) return;
  } catch (e) {
    if (gen !== S.gen) return;
    if (e.code !== 'network') showError(e);
    scheduleReconnect();
    return;
  }
  connect(ticket);
}

function closeSocket() {
  S.wsWanted = false;
  clearTimeout(S.retryTimer);
  clearInterval(S.pingTimer);
  const ws = S.ws;
  S.ws = null;
  if (ws) ws.close(1000);
  setConn('closed');
}

// ---------- wiring ----------

function setChatEnabled(on) {
  for (const sel of ['#input', '#send', '#to-human', '#video', '#notify', '#booking', '#upload']) $(sel).disabled = !on;
  if (on && S.channel === 'oa') {
    // subscribe messages are the mini-program's; the account's video, booking and upload entries are menu items
    for (const sel of ['#notify', '#video', '#booking', '#upload']) $(sel).disabled = true;
  }
}

async function onLogin(ev) {
  ev.preventDefault();
  const gen = ++S.gen;
  oaStop();
  closeSocket();
  clearError();
  setChatEnabled(false);
  Object.assign(S, { person: $('#person').value.trim() || '张阿姨', token: '', expiresAt: 0, lastId: 0, attempt: 0,
    channel: $('#channel').value === 'oa' ? 'oa' : 'miniapp' });
  S.seen.clear();
  S.unconfirmed.clear();
  S.acked.clear();
  const hint = document.createElement('p');
  hint.className = 'hint';
  hint.textContent = '您好！请直接说出您要办理的事情，比如“查余额”“改手机号”。';
  $('#messages').replaceChildren(hint);
  $('#messages').dataset.lastId = '0';
  $('#state').dataset.state = '';
  $('#state').textContent = '正在登录…';
  document.body.dataset.status = 'logging-in';
  $('#login').disabled = true;
  try {
    if (S.channel === 'oa') {
      await oaLogin(gen);
      if (gen !== S.gen) return;
      setChatEnabled(true);
      document.body.dataset.status = 'ready';
      $('#input').focus();
      return;
    }
    await login();
    const data = await api('GET', '/miniapp/messages');
    if (gen !== S.gen) return;
    setConversation(data.conversation);
    // Replies written while the customer was away come first (they may belong to an earlier conversation).
    if (data.waiting && data.waiting.length) showNotice(`您不在时，客服给您回复了${data.waiting.length}条消息`);
    addMessages([...(data.waiting || []), ...data.messages]);
    S.wsWanted = true;
    const { ticket } = await api('POST', '/miniapp/tickets', { purpose: 'socket' });
    if (gen !== S.gen) return;
    connect(ticket);
    setChatEnabled(true);
    document.body.dataset.status = 'ready';
    $('#input').focus();
  } catch (e) {
    if (gen !== S.gen) return;
    $('#state').textContent = '请先登录';
    document.body.dataset.status = 'logged-out';
    showError(e);
  } finally {
    if (gen === S.gen) $('#login').disabled = false;
  }
}

$('#login-form').addEventListener('submit', onLogin);

// Another channel is another app: end the session; logging in again (same name) continues the conversation.
$('#channel').addEventListener('change', () => {
  S.gen += 1;
  oaStop();
  closeSocket();
  setChatEnabled(false);
  $('#state').dataset.state = '';
  $('#state').textContent = '已切换渠道，请登录';
  document.body.dataset.status = 'logged-out';
  $('#login').disabled = false;
});

$('#composer').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const text = $('#input').value.trim();
  if (!text) return;
  $('#input').value = '';
  sendText(text);
});

$('#to-human').addEventListener('click', () => sendText('转人工'));

$('#video').addEventListener('click', () => openVideo());

$('#notify').addEventListener('click', () => allowReplyNotice().catch(showError));

$('#booking').addEventListener('click', async () => {
  try { await grantReminder(); } catch (e) { /* the booking still works, only without a reminder */ }
  openAdvisorPage('booking.html');
});

$('#upload').addEventListener('click', () => openAdvisorPage('upload.html'));

$('#error').addEventListener('click', clearError);

// Tapping a failed bubble resends it with the same client_msg_id.
$('#messages').addEventListener('click', (ev) => {
  const el = ev.target.closest('.msg.pending.failed');
  if (el) sendText(el.dataset.text, el.dataset.pending);
});

// Back online: reconnect now instead of waiting for the backoff.
window.addEventListener('online', () => {
  if (S.wsWanted && !S.ws) {
    clearTimeout(S.retryTimer);
    reconnect();
  }
});
