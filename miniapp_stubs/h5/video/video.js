// 云厅 video page: the recording notice and consent first, then one WebRTC connection to the backend,
// which relays the agent's audio and video to us (and ours to them) and records both (双录).
// Served at /h5/video/?conversation_id=…&ticket=…; all API calls are same-origin.
'use strict';

const $ = (sel) => document.querySelector(sel);

const STATES = {
  requested: '正在准备视频…',
  ringing: '正在呼叫客服，请稍候…',
  connected: '已接通',
  ended: '通话已结束',
  missed: '客服暂时未能接听',
  failed: '视频没有接通',
  cancelled: '通话已取消',
};
const FINAL = new Set(['ended', 'missed', 'failed', 'cancelled']);
const POLL_MS = 3000;
const ICE_GATHER_MS = 3000;

const S = {
  token: '',
  conversationId: null,
  notice: null,
  call: null,
  pc: null,
  stream: null,
  ws: null,
  pollTimer: 0,
  lastId: 0,
  finished: false,
  plan: null,
};

// ---------- HTTP ----------

class ApiError extends Error {
  constructor(message, code, status) { super(message); this.code = code; this.status = status; }
}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: `Bearer ${S.token}` } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError('网络连接失败，请稍后再试', 'network', 0);
  }
  if (res.ok) return res.json();
  let err = null;
  try { err = (await res.json()).error; } catch (e) { /* not JSON */ }
  throw new ApiError((err && err.message) || `请求失败（${res.status}）`, (err && err.code) || `http_${res.status}`, res.status);
}

// ---------- screen ----------

function showError(text) {
  const box = $('#error');
  box.textContent = text || '';
  box.hidden = !text;
}

function step(name) {
  document.body.dataset.step = name;
  $('#notice').hidden = name !== 'notice';
  $('#call').hidden = name !== 'call';
  $('#ended').hidden = name !== 'ended';
}

function showCall(call) {
  S.call = call;
  document.body.dataset.callState = call.state;
  document.body.dataset.callId = call.id;
  const status = $('#status');
  status.dataset.state = call.state;
  status.textContent = STATES[call.state] || call.state;
  $('#recording').hidden = call.state !== 'connected';
  if (FINAL.has(call.state)) finish(call.state);
}

function showLatest(text) { $('#latest').textContent = text || ''; }

// ---------- step 1: the notice ----------

async function loadNotice() {
  S.notice = await api('GET', '/video/notice');
  $('#notice-title').textContent = S.notice.title;
  $('#notice-text').textContent = S.notice.text;
  $('#consent').disabled = false;
  step('notice');
}

async function consent() {
  $('#consent').disabled = true;
  showError('');
  try {
    const call = await api('POST', '/video/calls', {
      conversation_id: S.conversationId,
      consent: { notice_version: S.notice.version, accepted: true },
    });
    step('call');
    showCall(call);
    await listen(call);
    await startMedia(call);
  } catch (e) {
    showError(e.message);
    if (!S.call) $('#consent').disabled = false;
    if (e.code === 'video_capacity_full') {  // no line free: say so plainly where the call ends (the queue keeps them)
      finish('failed');
      $('#ended-text').textContent = e.message;
    }
  }
}

// ---------- step 2: media ----------

async function startMedia(call) {
  try {
    S.stream = await navigator.mediaDevices.getUserMedia({
      audio: true, video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: 'user' },
    });
  } catch (e) {
    showError('无法打开摄像头或麦克风，请在设置中允许后再试。');
    await hangup();
    return;
  }
  $('#local').srcObject = S.stream;
  // The backend is the only peer and its answer carries its candidates; TURN (when configured) is for
  // mobile networks that can't reach it directly, with credentials minted for this call.
  const ice = await api('GET', `/video/calls/${call.id}/ice`);
  const pc = S.pc = new RTCPeerConnection({ iceServers: ice.ice_servers, iceTransportPolicy: ice.ice_transport_policy });
  for (const track of S.stream.getTracks()) pc.addTrack(track, S.stream);
  pc.ontrack = (ev) => {
    const remote = $('#remote');
    if (!remote.srcObject) remote.srcObject = new MediaStream();
    remote.srcObject.addTrack(ev.track);
  };
  pc.onconnectionstatechange = () => { document.body.dataset.media = pc.connectionState; };
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc);
  const answer = await api('POST', `/video/calls/${call.id}/offer`, { sdp: pc.localDescription.sdp, type: 'offer' });
  await pc.setRemoteDescription(answer);
  countRemoteFrames();
}

// The backend takes one offer with all our candidates in it (no trickle ICE over HTTP).
function iceGathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); pc.removeEventListener('icegatheringstatechange', check); resolve(); };
    const check = () => { if (pc.iceGatheringState === 'complete') done(); };
    const timer = setTimeout(done, ICE_GATHER_MS);
    pc.addEventListener('icegatheringstatechange', check);
  });
}

// #remote[data-frames] counts the agent's frames actually shown (tests and support staff read it).
function countRemoteFrames() {
  const video = $('#remote');
  if (!video.requestVideoFrameCallback) return;
  const tick = () => {
    video.dataset.frames = String(Number(video.dataset.frames) + 1);
    if (!S.finished) video.requestVideoFrameCallback(tick);
  };
  video.requestVideoFrameCallback(tick);
}

// ---------- call events: the customer's WebSocket, and a slow poll in case it drops ----------

async function listen(call) {
  try {
    const history = await api('GET', `/miniapp/conversations/${call.conversation_id}/messages`);
    for (const m of history.messages) S.lastId = Math.max(S.lastId, m.id);
  } catch (e) { /* the poll still works */ }
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  let ticket;  // the socket takes a single-use ticket: the session token never goes in a URL
  try { ticket = (await api('POST', '/miniapp/tickets', { purpose: 'socket' })).ticket; } catch (e) { return; }
  const ws = S.ws = new WebSocket(`${scheme}://${location.host}/miniapp/ws?ticket=${encodeURIComponent(ticket)}&after_id=${S.lastId}`);
  ws.onmessage = (ev) => {
    let event;
    try { event = JSON.parse(ev.data); } catch (e) { return; }
    if (event.type === 'video_call' && S.call && event.call.id === S.call.id) showCall(event.call);
    else if (event.type === 'repayment_plan' && S.call && event.plan.call_id === S.call.id) showPlan(event.plan);
    else if (event.type === 'message' && event.message.conversation_id === call.conversation_id
             && event.message.sender_kind !== 'customer' && !isPlanOffer(event.message)) showLatest(event.message.text);
  };
  S.pollTimer = setInterval(poll, POLL_MS);
}

async function poll() {
  if (!S.call || S.finished) return;
  try { showCall(await api('GET', `/video/calls/${S.call.id}`)); } catch (e) { /* next time */ }
}

// ---------- in the call: a repayment plan to confirm ----------

// The plan's own message repeats what the plan box shows; the box is enough.
function isPlanOffer(message) {
  const p = message.payload;
  return !!(p && p.type === 'repayment_plan' && !p.state);
}

function showPlan(plan) {
  if (plan.state !== 'sent') return;
  S.plan = plan;
  $('#plan-summary').textContent = plan.summary;
  $('#plan').hidden = false;
}

async function answerPlan(accept) {
  if (!S.plan) return;
  try {
    await api('POST', `/video/calls/${S.call.id}/plans/${S.plan.id}/answer`, { accept });
    $('#plan').hidden = true;
    S.plan = null;
  } catch (e) { showError(e.message); }
}

// ---------- ending ----------

async function hangup() {
  if (S.call && !FINAL.has(S.call.state)) {
    try { showCall(await api('POST', `/video/calls/${S.call.id}/hangup`)); } catch (e) { showError(e.message); }
  }
  finish(S.call ? S.call.state : 'cancelled');
}

function finish(state) {
  if (S.finished) return;
  S.finished = true;
  clearInterval(S.pollTimer);
  if (S.stream) for (const track of S.stream.getTracks()) track.stop();
  if (S.pc) S.pc.close();
  if (S.ws) S.ws.close();
  $('#ended-text').textContent = STATES[state] || '通话已结束';
  document.body.dataset.media = 'closed';
  step('ended');
}

// ---------- start ----------

function readParams() {
  const params = new URLSearchParams(location.search);
  const id = params.get('conversation_id');
  S.conversationId = id && /^\d+$/.test(id) ? Number(id) : null;
  // The link carries a single-use ticket (never the session token); it leaves the address bar at once.
  const ticket = params.get('ticket');
  if (ticket) {
    params.delete('ticket');
    history.replaceState(null, '', `${location.pathname}${params.toString() ? `?${params}` : ''}`);
  }
  S.token = sessionStorage.getItem('yunting_video_token') || '';
  return ticket;
}

// The ticket, once, for a session token this tab keeps (a reload uses the kept one).
async function signIn(ticket) {
  if (!ticket) return;
  const response = await fetch('/miniapp/tickets/redeem', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ ticket }),
  });
  if (!response.ok) return;
  const { token } = await response.json();
  sessionStorage.setItem('yunting_video_token', token);
  S.token = token;
}

$('#consent').addEventListener('click', consent);
$('#decline').addEventListener('click', () => {
  showLatest('');
  showError('您没有同意录音录像，视频不会开始。如需办理请返回聊天页面。');
  if (history.length > 1) history.back();
});
$('#hangup').addEventListener('click', hangup);
$('#plan-confirm').addEventListener('click', () => answerPlan(true));
$('#plan-decline').addEventListener('click', () => answerPlan(false));
// Leaving the page closes our connection: the backend notices and ends the call after its grace period.
window.addEventListener('pagehide', () => { if (S.pc) S.pc.close(); });

signIn(readParams()).catch(() => {}).then(() => {
  if (!S.token) {
    showError('登录已失效，请返回重新打开视频客服。');
    step('notice');
  } else {
    loadNotice().catch((e) => showError(e.message));
  }
});
