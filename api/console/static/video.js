// 云厅 agent console, video: the ring alert, answering, the agent's camera over one WebRTC connection to
// the backend (which relays the customer and records both sides), identity verification and repayment
// plans during the call, and the supervisor's recordings. Loaded before console.js, whose helpers
// ($, el, api, S, guarded, showAlert, openConversation) these functions use when they run.
'use strict';

const CALL_STATES = { requested: '客户准备中', ringing: '振铃中', connected: '通话中', ended: '已结束',
  missed: '未接听', failed: '连接失败', cancelled: '已取消' };
const END_REASONS = { customer_hangup: '客户挂断', agent_hangup: '坐席挂断',
  customer_dropped: '客户断线', agent_dropped: '坐席断线', connect_timeout: '连接超时', ring_timeout: '无人接听',
  no_media: '未收到音视频', media_worker_lost: '服务器中断', server_shutdown: '服务器重启' };
const FINAL_CALL_STATES = new Set(['ended', 'missed', 'failed', 'cancelled']);
const PARTIES = { customer: '客户', agent: '坐席' };
const RECORDING_STATES = {
  recording: '录制中', complete: '已存档', degraded: '有缺陷（已标记）', failed: '失败（已标记）', unfinalized: '未正常结束（已标记）',
};
const CODECS = { 'video/h264': 'H.264', 'video/vp8': 'VP8', 'audio/opus': 'Opus' };
const CALL_EVENTS = new Set(['call_ringing', 'call_accepted', 'call_connected', 'call_ended', 'call_missed',
  'identity_checked', 'repayment_plan_answered', 'recordings_finalized']);
const ICE_WAIT_MS = 3000;

// V.media: the live call on this page (one at a time); V.shown: the call in the panel (the open conversation's).
const V = { media: null, shown: null, ringing: [], ringTone: null, countdown: 0 };

function isCallEvent(event) { return CALL_EVENTS.has(event.type); }

async function onCallEvent(event) {
  if (['call_ringing', 'call_accepted', 'call_missed', 'call_ended'].includes(event.type)) await loadRinging();
  if (event.type === 'call_ringing' && mayAnswer(event)) showAlert(`视频来电：会话 #${event.conversation_id}${event.summary ? ` · ${event.summary}` : ''}`);
  if (V.media && event.call_id === V.media.callId && FINAL_CALL_STATES.has(event.state)) stopMedia();
  if (S.open && (S.open === event.conversation_id || (V.shown && event.call_id === V.shown.call.id))) await showCallOf(S.open);
}

function mayAnswer(event) {
  return S.agent.video_capable && event.agent_id === null && (event.rung_agent_id === S.agent.id || (event.rung_agent_id === null && S.agent.skills.includes(event.skill_group)));
}

// ---- the ring alert ----
async function loadRinging() {
  const calls = await api('GET', '/video/calls?state=ringing');
  const ringing = calls.filter((c) => c.agent_id === null);
  const same = ringing.map((c) => c.id).join() === V.ringing.map((c) => c.id).join();
  V.ringing = ringing;
  $('#ringing').hidden = V.ringing.length === 0;
  if (!same || !$('#ringing-calls').children.length) renderRinging();
  ringTone(V.ringing.length > 0 && !V.media);
  clearInterval(V.countdown);
  if (V.ringing.length) {
    V.countdown = setInterval(() => document.querySelectorAll('#ringing-calls .left')
      .forEach((left) => { left.textContent = secondsLeft(left.dataset.deadline); }), 1000);
  }
}

// Re-rendered only when the calls change, so a button isn't replaced under the agent's click.
function renderRinging() {
  $('#ringing-calls').replaceChildren(...V.ringing.map((c) => el('li', { dataset: { callId: c.id, conversationId: c.conversation_id } },
    el('span', { className: 'tag video' }, '视频来电'),
    `会话 #${c.conversation_id} · ${GROUPS[c.skill_group] || c.skill_group} · `,
    el('span', { className: 'left', dataset: { deadline: c.ring_deadline || '' } }, secondsLeft(c.ring_deadline)),
    el('button', { type: 'button', className: 'answer', onclick: guarded(() => answerCall(c.id)) }, '接听'),
    el('button', { type: 'button', className: 'peek', onclick: guarded(() => openConversation(c.conversation_id)) }, '查看交接卡'))));
}

function secondsLeft(iso) {
  if (!iso) return '';
  return `${Math.max(0, Math.round((new Date(iso).getTime() - Date.now()) / 1000))}秒内接听`;
}

// A soft two-tone ring while a call waits (browsers allow sound after the sign-in click).
function ringTone(on) {
  if (!on) { clearInterval(V.ringTone); V.ringTone = null; return; }
  if (V.ringTone) return;
  const beep = () => {
    try {
      const audio = V.audio || (V.audio = new AudioContext());
      for (const [freq, at] of [[880, 0], [660, 0.25]]) {
        const osc = audio.createOscillator(); const gain = audio.createGain();
        gain.gain.value = 0.05; osc.frequency.value = freq; osc.connect(gain).connect(audio.destination);
        osc.start(audio.currentTime + at); osc.stop(audio.currentTime + at + 0.2);
      }
    } catch (err) { /* no sound on this machine: the banner is still there */ }
  };
  beep();
  V.ringTone = setInterval(beep, 2000);
}

// ---- answering, and the agent's media ----
async function answerCall(callId) {
  const call = await api('POST', `/video/calls/${callId}/accept`);
  ringTone(false);
  await Promise.all([openConversation(call.conversation_id), loadHeld()]); // answering the call is answering them
  await joinMedia(call);
  await loadRinging();
}

/** Our camera and microphone to the backend; also rejoins a call of ours after the page was reloaded. */
async function joinMedia(call) {
  if (V.media && V.media.callId === call.id) return;
  stopMedia();
  // The backend is the only peer (its answer has its candidates); TURN only when the deployment configures it.
  const ice = await api('GET', `/video/calls/${call.id}/ice`);
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true, video: { width: { ideal: 640 }, height: { ideal: 480 } } });
  } catch (err) {
    // Both sides must be on the recording (双录): without our camera the call can't go on.
    await api('POST', `/video/calls/${call.id}/hangup`).catch(() => {});
    throw new Error('无法打开摄像头或麦克风，通话已挂断。请检查设备权限后让客户重新发起。');
  }
  const pc = new RTCPeerConnection({ iceServers: ice.ice_servers, iceTransportPolicy: ice.ice_transport_policy });
  V.media = { callId: call.id, pc, stream };
  for (const track of stream.getTracks()) pc.addTrack(track, stream);
  $('#local-video').srcObject = stream;
  const remote = new MediaStream();
  $('#remote-video').srcObject = remote;
  $('#remote-video').dataset.frames = '0';
  pc.ontrack = (ev) => remote.addTrack(ev.track);
  pc.onconnectionstatechange = () => { $('#video-call').dataset.media = pc.connectionState; };
  await pc.setLocalDescription(await pc.createOffer());
  await iceGathered(pc);
  const answer = await api('POST', `/video/calls/${call.id}/offer`, { sdp: pc.localDescription.sdp, type: 'offer' });
  await pc.setRemoteDescription(answer);
  countFrames($('#remote-video'), pc);
}

// The backend takes one offer carrying all our candidates (no trickle ICE over HTTP).
function iceGathered(pc) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ICE_WAIT_MS);
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') { clearTimeout(timer); resolve(); }
    });
  });
}

// #remote-video[data-frames]: the customer's frames actually shown (tests and support staff read it).
function countFrames(video, pc) {
  if (!video.requestVideoFrameCallback) return;
  const tick = () => {
    if (!V.media || V.media.pc !== pc) return;
    video.dataset.frames = String(Number(video.dataset.frames || 0) + 1);
    video.requestVideoFrameCallback(tick);
  };
  video.requestVideoFrameCallback(tick);
}

function stopMedia() {
  if (!V.media) return;
  for (const track of V.media.stream.getTracks()) track.stop();
  V.media.pc.close();
  V.media = null;
  $('#local-video').srcObject = null;
  $('#remote-video').srcObject = null;
  $('#video-call').dataset.media = 'closed';
}

async function hangupCall() {
  if (!V.shown) return;
  await api('POST', `/video/calls/${V.shown.call.id}/hangup`);
  stopMedia();
  await showCallOf(V.shown.call.conversation_id);
}

// A reloaded console picks its call up again (the backend replaces our old connection).
async function resumeMyCall() {
  const calls = await api('GET', '/video/calls?state=ringing&state=connected');
  const mine = calls.find((c) => c.agent_id === S.agent.id);
  if (!mine) return;
  await openConversation(mine.conversation_id);
  await joinMedia(mine);
}

// ---- the call panel, for the open conversation ----
async function showCallOf(conversationId) {
  const calls = await api('GET', `/video/calls?conversation_id=${conversationId}`);
  const latest = calls.sort((a, b) => b.id - a.id)[0];
  if (S.open !== conversationId) return; // another conversation was opened meanwhile
  if (!latest) { V.shown = null; $('#video-call').hidden = true; return; }
  const view = await api('GET', `/video/calls/${latest.id}`);
  V.shown = view;
  renderCall(view);
}

function renderCall(view) {
  const { call } = view;
  const panel = $('#video-call');
  const mine = call.agent_id === S.agent.id;
  const live = V.media && V.media.callId === call.id;
  panel.hidden = false;
  panel.dataset.callId = call.id;
  panel.dataset.state = call.state;
  $('#video-title').textContent = `视频通话 #${call.id}`;
  $('#video-status').textContent = callStatus(call);
  $('#video-recording').hidden = call.state !== 'connected';
  $('#video-media').hidden = !live;
  $('#video-accept').hidden = !(S.agent.video_capable && call.state === 'ringing' && call.agent_id === null);
  $('#video-rejoin').hidden = !(mine && !live && call.state === 'connected');
  const inCall = mine && call.state === 'connected';
  for (const sel of ['#verify-identity', '#identity-failed', '#plan-send']) $(sel).disabled = !inCall;
  $('#video-hangup').hidden = !(mine && !FINAL_CALL_STATES.has(call.state));
  $('#plan-form').hidden = !mine || FINAL_CALL_STATES.has(call.state);
  $('#video-identity').textContent = view.identity_checks.length
    ? view.identity_checks.map((c) => `${c.result === 'verified' ? '核验通过' : '核验未通过'}（通话第${Math.round(c.call_offset_s || 0)}秒）`).join('；')
    : '尚未核验';
  $('#video-plans').replaceChildren(...view.plans.map((p) => el('li', { dataset: { planId: p.id, state: p.state } },
    `${p.summary} — ${{ sent: '等待客户确认', confirmed: '客户已确认（已随录像存证）', declined: '客户未接受' }[p.state] || p.state}`)));
  renderRecordings($('#video-recordings'), view.recordings, ['supervisor', 'admin'].includes(S.agent.role));
}

function callStatus(call) {
  const state = call.state === 'ringing' && call.agent_id !== null ? '已接听，正在接通' : (CALL_STATES[call.state] || call.state);
  const duration = call.duration_s ? ` · 时长 ${Math.round(call.duration_s)} 秒` : '';
  return `${state}${call.end_reason ? `（${END_REASONS[call.end_reason] || call.end_reason}）` : ''}${duration}`;
}

async function verifyIdentity(result) {
  await api('POST', `/video/calls/${V.shown.call.id}/identity`, { result, note: $('#identity-note').value.trim() || null });
  $('#identity-note').value = '';
  showAlert(result === 'verified' ? '已记录：视频核验通过' : '已记录：视频核验未通过');
  await openConversation(V.shown.call.conversation_id); // the handoff card now says so
}

async function sendPlan(event) {
  event.preventDefault();
  const value = (id) => $(id).value.trim();
  await api('POST', `/video/calls/${V.shown.call.id}/plans`, {
    total_amount: value('#plan-total'), installments: Number(value('#plan-installments')),
    monthly_amount: value('#plan-monthly'), first_due_date: value('#plan-first-due'), note: value('#plan-note') || null,
  });
  showAlert('还款方案已发送，等待客户在视频页面确认');
  await showCallOf(V.shown.call.conversation_id);
}

// ---- recordings (download for supervisors; every listing and download is audited by the API) ----
function renderRecordings(tbody, recordings, mayDownload) {
  tbody.replaceChildren(...recordings.map((r) => el('tr', { dataset: { recordingId: r.id, status: r.status } },
    el('td', {}, `#${r.call_id}`), el('td', {}, PARTIES[r.party] || r.party),
    el('td', {}, RECORDING_STATES[r.status] || r.status),
    el('td', { className: 'evidence' }, ...recordingEvidence(r)),
    el('td', {}, r.duration_s ? `${r.duration_s.toFixed(1)}秒` : '—'),
    el('td', {}, r.size_bytes ? `${(r.size_bytes / 1024).toFixed(0)} KB` : '—'),
    el('td', { className: 'sha', title: r.sha256 || '' }, r.sha256 ? `${r.sha256.slice(0, 12)}…` : '—'),
    el('td', {}, mayDownload && r.sha256 ? el('button', { type: 'button', className: 'download', onclick: guarded(() => downloadRecording(r)) }, '下载') : ''))));
}

/** What the file holds, as the server measured it: codecs as received, frames written of received, and
 *  every reason it is degraded (gaps with their offsets, audio/video difference, frames not written). */
function recordingEvidence(r) {
  if (r.status === 'recording') return ['—'];
  const codecs = [r.video_codec, r.audio_codec].filter(Boolean).map((c) => CODECS[c] || c).join(' + ');
  const frames = r.frames_received != null ? `视频帧 ${r.frames_written}/${r.frames_received}` : '';
  const av = r.av_offset_s != null ? `音画差 ${Math.abs(r.av_offset_s).toFixed(1)}秒` : '';
  const parts = [el('span', { className: 'summary' }, [codecs, frames, av, r.transcoded ? '已转码转发' : ''].filter(Boolean).join('，'))];
  if ((r.issues || []).length) {
    parts.push(el('ul', { className: 'issues' }, ...r.issues.map((issue) => el('li', {}, issue))));
  }
  return parts;
}

async function loadRecordings() {
  const recordings = await api('GET', '/video/recordings?limit=50');
  renderRecordings($('#recordings tbody'), recordings, true);
}

/** Fetched with our token (a plain link can't carry it), checked against the stored SHA-256, then saved. */
async function downloadRecording(recording) {
  const response = await fetch(`/video/recordings/${recording.id}/download`, { headers: { Authorization: `Bearer ${S.token}` } });
  if (!response.ok) throw new Error(`下载失败（HTTP ${response.status}）`);
  const blob = await response.blob();
  const digest = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
  const hex = [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, '0')).join('');
  if (hex !== recording.sha256) throw new Error('下载的文件与存档的 SHA-256 不一致，请勿使用，并联系管理员。');
  const link = el('a', { href: URL.createObjectURL(blob), download: `call-${recording.call_id}-${recording.party}.${recording.content_type === 'video/mp4' ? 'mp4' : 'webm'}` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  showAlert(`录像 #${recording.id} 已下载，SHA-256 校验一致`);
}

function wireVideo() {
  $('#video-accept').addEventListener('click', guarded(() => answerCall(V.shown.call.id)));
  $('#video-rejoin').addEventListener('click', guarded(() => joinMedia(V.shown.call)));
  $('#video-hangup').addEventListener('click', guarded(hangupCall));
  $('#verify-identity').addEventListener('click', guarded(() => verifyIdentity('verified')));
  $('#identity-failed').addEventListener('click', guarded(() => verifyIdentity('failed')));
  $('#plan-form').addEventListener('submit', guarded(sendPlan));
  $('#load-recordings').addEventListener('click', guarded(loadRecordings));
}
