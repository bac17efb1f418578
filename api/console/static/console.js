// 云厅 agent console: plain JS over the agent API. Bearer token in sessionStorage (no cookies → no CSRF).
'use strict';

const $ = (sel) => document.querySelector(sel);
const S = { token: sessionStorage.getItem('yt-agent-token') || '', agent: null, open: null, socket: null, ping: 0 };
const CHANNELS = { wechat_oa: '公众号', miniapp: '小程序' };
const SENDERS = { customer: '客户', bot: '智能客服', agent: '坐席', system: '系统' };
const IDENTITY = { wechat_linked: '微信身份已关联', openid_only: '仅 openid', verified_by_video: '视频核验通过' };
const GROUPS = { cards: '卡片组', loans: '贷款组', accounts: '账户组', wealth: '理财组', general: '综合组' };
const SLOTS = { card_type: '卡片类型', card_last4: '卡号尾号', phone: '手机号', amount: '金额', date: '日期' };
const VALUES = { credit: '信用卡', debit: '借记卡' };
const DELIVERY = { pending: '待送达', sent: '已发送', delivered: '已送达', read: '已读', failed: '发送失败' };
const ROUTES = { miniapp: '小程序', wechat_oa: '公众号消息', subscribe: '订阅消息' };
const REASONS = { request_human: '客户要求转人工', low_confidence: '机器人两次未能理解', nlu_unavailable: '智能客服暂不可用',
  complaint: '投诉（加急）', transfer: '坐席转接', request_video: '客户要求视频' };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node[key] = value;
  }
  for (const child of children) node.append(child); // text is always inserted as text, never HTML
  return node;
}

function showError(message) { const e = $('#error'); e.textContent = message; e.hidden = !message; }
function showAlert(message) {
  const a = $('#alert'); a.textContent = message; a.hidden = false;
  clearTimeout(showAlert.timer); showAlert.timer = setTimeout(() => { a.hidden = true; }, 6000);
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method,
    headers: { 'Content-Type': 'application/json', ...(S.token ? { Authorization: `Bearer ${S.token}` } : {}) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401 && path !== '/agents/login') { logout(); throw new Error('登录已过期，请重新登录'); }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((data.error && data.error.message) || `请求失败（HTTP ${response.status}）`);
  return data;
}

function guarded(fn) {
  return async (...args) => {
    try { showError(''); await fn(...args); } catch (err) { showError(err.message); }
  };
}

// ---- sign in / out ----
async function login(event) {
  event.preventDefault();
  const result = await api('POST', '/agents/login', { username: $('#username').value, password: $('#password').value });
  S.token = result.token;
  sessionStorage.setItem('yt-agent-token', S.token);
  await start();
}

function logout() {
  S.token = ''; S.agent = null; S.open = null;
  sessionStorage.removeItem('yt-agent-token');
  if (S.socket) S.socket.close();
  clearInterval(S.ping);
  stopMedia();
  ringTone(false);
  $('#ringing').hidden = true;
  document.body.dataset.status = 'logged-out';
  $('#workspace').hidden = true; $('#who').hidden = true; $('#login-form').hidden = false;
}

async function start() {
  S.agent = await api('GET', '/agents/me');
  const video = S.agent.video_capable ? '、视频坐席' : '';
  $('#agent-name').textContent = `${S.agent.display_name}（${S.agent.skills.map((g) => GROUPS[g] || g).join('、')}${video}）`;
  $('#presence').value = S.agent.presence;
  $('#show-supervisor').hidden = !['supervisor', 'admin'].includes(S.agent.role);
  $('#login-form').hidden = true; $('#who').hidden = false; $('#workspace').hidden = false;
  connect();
  await Promise.all([loadHeld(), loadQueue(), loadRinging()]);
  document.body.dataset.status = 'ready';
  await Advisor.started();
  await resumeMyCall();
}

// ---- live inbox ----
// The socket URL carries a single-use ticket minted with our token, never the token itself (access logs).
async function connect() {
  let ticket;
  try {
    ({ ticket } = await api('POST', '/agents/tickets'));
  } catch (e) {
    if (S.token) setTimeout(connect, 2000);
    return;
  }
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/agents/ws?ticket=${encodeURIComponent(ticket)}`;
  const socket = new WebSocket(url);
  S.socket = socket;
  socket.onmessage = (frame) => onEvent(JSON.parse(frame.data));
  socket.onclose = () => { if (S.token && S.socket === socket) setTimeout(connect, 2000); };
  clearInterval(S.ping);
  S.ping = setInterval(() => socket.readyState === 1 && socket.send('{"type":"ping"}'), 15000);
}

function onEvent(event) {
  if (isCallEvent(event)) guarded(onCallEvent)(event);
  guarded(Advisor.onEvent)(event);
  if (event.type === 'queue_changed' || event.type === 'resync') loadQueue();
  if (event.type === 'resync') loadHeld();
  if (event.type === 'assigned') { showAlert(`新会话 #${event.conversation_id} 已分配给您`); loadHeld(); loadQueue(); }
  if (event.type === 'conversation_removed') {
    loadHeld();
    if (S.open === event.conversation_id) {
      // Still readable if it went back to the queue; not once another agent took it (transfer, video take-over).
      openConversation(event.conversation_id).catch(() => {
        S.open = null; $('#conversation').hidden = true;
        showAlert(`会话 #${event.conversation_id} 已由其他客服接手`);
      });
    }
  }
  if (event.type === 'delivery') showDelivery(event.message_id, event);
  if (event.type === 'message') {
    const m = event.message;
    if (S.open === m.conversation_id) openConversation(m.conversation_id);
    else showAlert(`会话 #${m.conversation_id} 有新消息`);
    loadHeld();
  }
}

// ---- lists ----
async function loadHeld() {
  const held = await api('GET', '/agents/me/conversations');
  $('#held').replaceChildren(...held.map((c) => el('li', {
    className: `conv${c.answered ? '' : ' unanswered'}${S.open === c.conversation_id ? ' active' : ''}`,
    dataset: { id: c.conversation_id }, onclick: guarded(() => openConversation(c.conversation_id)),
  }, `#${c.conversation_id} ${c.intent || '未识别诉求'} · ${CHANNELS[c.current_channel] || c.current_channel}`)));
}

async function loadQueue() {
  const supervisor = ['supervisor', 'admin'].includes(S.agent.role);
  const items = await api('GET', `/agents/queue${supervisor ? '?all_groups=true' : ''}`);
  $('#queue').replaceChildren(...items.map((q) => el('li', {
    className: `queue-item${q.priority > 0 ? ' urgent' : ''}`, dataset: { conversationId: q.conversation_id },
    onclick: guarded(() => openConversation(q.conversation_id)),
  }, el('span', { className: 'tag' }, GROUPS[q.skill_group] || q.skill_group),
  ...(q.mode === 'video' ? [el('span', { className: 'tag video' }, '视频')] : []),
  `#${q.conversation_id} 等待 ${minutesSince(q.waiting_since)}`,
  el('div', { className: 'summary' }, q.summary))));
  if (supervisor && !$('#supervisor').hidden) await loadSupervisor();
}

function minutesSince(iso) {
  const s = Math.max(0, (Date.now() - new Date(iso).getTime()) / 1000);
  return s < 60 ? `${Math.round(s)}秒` : `${Math.round(s / 60)}分钟`;
}

// ---- one conversation ----
async function openConversation(id) {
  const view = await api('GET', `/agents/conversations/${id}`);
  S.open = id;
  const c = view.conversation;
  const mine = c.agent_id === S.agent.id && c.state === 'with_agent';
  $('#conversation').hidden = false;
  $('#conversation').dataset.conversationId = id;
  $('#conversation').dataset.state = c.state;
  renderCard(view.handoff_card || {}, c);
  renderTranscript(view.messages, mine || ['supervisor', 'admin'].includes(S.agent.role));
  for (const sel of ['#reply-input', '#reply-send', '#canned', '#transfer', '#transfer-group', '#close', '#disposition']) {
    $(sel).disabled = !mine;
  }
  $('#claim').hidden = c.state !== 'queued';
  await loadCanned(c.intent);
  await Advisor.opened(view, mine);
  document.querySelectorAll('#held li').forEach((li) => li.classList.toggle('active', Number(li.dataset.id) === id));
  await showCallOf(id);
}

function renderCard(card, conversation) {
  const slots = Object.entries(card.slots || conversation.slots || {});
  $('#card-summary').textContent = card.summary || '（无交接卡：会话未经机器人转人工）';
  $('#card-mode').textContent = card.mode === 'video' ? '· 需视频核验' : '';
  $('#card-intent').textContent = card.intent ? `${card.intent}（置信度 ${Math.round((card.confidence || 0) * 100)}%）` : '未识别';
  $('#card-scenario').textContent = card.scenario || '—';
  $('#card-slots').textContent = slots.length ? slots.map(([k, v]) => `${SLOTS[k] || k} ${VALUES[v] || v}`).join('，') : '—';
  $('#card-path').textContent = (conversation.channel_path || []).map((ch) => CHANNELS[ch] || ch).join(' → ');
  $('#card-identity').textContent = IDENTITY[card.identity_status] || card.identity_status || '—';
  $('#card-reason').textContent = REASONS[card.reason] || card.scenario || card.reason || '—';
  $('#card-bot-said').replaceChildren(...(card.bot_said || []).map((t) => el('li', {}, t)));
  // Live card: what changed since the escalation, the customer's recent cases, the last messages.
  const changed = Object.entries(card.slots_changed || {});
  $('#card-changed').textContent = changed.length
    ? changed.map(([k, v]) => `${SLOTS[k] || k} ${VALUES[v.before] || v.before || '—'} → ${VALUES[v.now] || v.now || '—'}`).join('，')
    : '无';
  const cases = card.recent_cases || [];
  $('#card-cases').replaceChildren(...(cases.length ? cases.map((c) => el('li', { dataset: { conversationId: c.conversation_id } },
    `#${c.conversation_id} ${c.title || c.intent || '未识别'} · ${c.status}${c.agent_said ? ` · “${c.agent_said}”` : ''}`)) : [el('li', {}, '无')]));
  $('#card-last').replaceChildren(...(card.last_messages || []).map((m) => el('li', {},
    `${SENDERS[m.sender_kind] || m.sender_kind}（${CHANNELS[m.channel] || m.channel}）：${m.text}`)));
}

// An agent message's delivery state, next to it; kept live by `delivery` events.
function deliveryBadge(delivery) {
  const badge = el('span', { className: 'delivery' });
  setBadge(badge, delivery);
  return badge;
}

function setBadge(badge, d) {
  badge.dataset.state = d.state;
  badge.dataset.route = d.route || '';
  badge.textContent = `${DELIVERY[d.state] || d.state}${d.route ? ` · ${ROUTES[d.route] || d.route}` : ''}`;
  badge.title = '送达状态';
}

function showDelivery(messageId, d) {
  const badge = document.querySelector(`#transcript .msg[data-id="${messageId}"] .delivery`);
  if (badge) setBadge(badge, d);
}

function renderTranscript(messages, mayReveal) {
  const box = $('#transcript');
  box.replaceChildren(...messages.map((m) => {
    const who = `${SENDERS[m.sender_kind] || m.sender_kind} · ${CHANNELS[m.channel] || m.channel} · ${new Date(m.created_at).toLocaleTimeString('zh-CN')}`;
    const node = el('div', { className: `msg${m.internal ? ' internal' : ''}`, dataset: { id: m.id, sender: m.sender_kind } },
      el('div', { className: 'who' }, m.internal ? `${who} · 内部备注` : who));
    const image = m.payload && (m.payload.pic_url || m.payload.image_url);
    if (image) node.append(el('img', { src: image, alt: '客户发送的图片' }));
    const text = el('span', { className: 'text' }, m.text);
    node.append(text);
    if (m.delivery) node.append(deliveryBadge(m.delivery));
    if (mayReveal && m.text.includes('****')) {
      node.append(el('button', { className: 'reveal', type: 'button', onclick: guarded(async () => {
        const revealed = await api('POST', `/agents/conversations/${S.open}/messages/${m.id}/reveal`);
        text.textContent = revealed.text;
      }) }, '显示完整号码'));
    }
    return node;
  }));
  box.scrollTop = box.scrollHeight;
}

async function loadCanned(intent) {
  const replies = await api('GET', `/agents/canned-replies${intent ? `?intent=${encodeURIComponent(intent)}` : ''}`);
  $('#canned').replaceChildren(el('option', { value: '' }, '常用语…'), ...replies.map((r) => el('option', { value: r }, r)));
}

async function sendReply() {
  const text = $('#reply-input').value.trim();
  if (!text || !S.open) return;
  await api('POST', `/agents/conversations/${S.open}/messages`, { text });
  $('#reply-input').value = '';
  await openConversation(S.open);
  await loadHeld();
}

async function addNote() {
  const text = $('#note-input').value.trim();
  if (!text || !S.open) return;
  await api('POST', `/agents/conversations/${S.open}/notes`, { text });
  $('#note-input').value = '';
  await openConversation(S.open);
}

async function claim() {
  await api('POST', `/agents/conversations/${S.open}/claim`);
  await Promise.all([loadHeld(), loadQueue()]);
  await openConversation(S.open);
}

async function transfer() {
  await api('POST', `/agents/conversations/${S.open}/transfer`, { to_group: $('#transfer-group').value });
  showAlert('已转接');
  await Promise.all([loadHeld(), loadQueue()]);
  await openConversation(S.open);
}

async function closeConversation() {
  await api('POST', `/agents/conversations/${S.open}/close`, { disposition: $('#disposition').value });
  showAlert('会话已结束');
  await loadHeld();
  await openConversation(S.open);
}

// ---- supervisor ----
async function loadSupervisor() {
  const o = await api('GET', '/supervisor/overview');
  const t = o.today;
  const pct = (x) => (x === null || x === undefined ? '—' : `${Math.round(x * 100)}%`);
  const secs = (x) => (x === null || x === undefined ? '—' : `${Math.round(x)}秒`);
  const figures = [['今日会话', t.conversations], ['机器人解决率', pct(t.containment_rate)], ['等待中位数', secs(t.wait_median_s)],
    ['等待P90', secs(t.wait_p90_s)], ['首次响应中位数', secs(t.first_response_median_s)],
    ['满意度', t.csat_average ? `${t.csat_average.toFixed(1)}（${t.csat_count}）` : '—']];
  $('#today').replaceChildren(...figures.map(([k, v]) => el('div', { className: 'figure' }, k, el('b', {}, String(v)))));
  $('#queues tbody').replaceChildren(...o.queues.map((q) => el('tr', {},
    el('td', {}, GROUPS[q.skill_group]), el('td', {}, String(q.waiting)), el('td', {}, secs(q.longest_wait_s)))));
  $('#agents tbody').replaceChildren(...o.agents.map((a) => el('tr', { dataset: { agentId: a.id } },
    el('td', {}, a.display_name), el('td', {}, a.skills.map((g) => GROUPS[g] || g).join('、')),
    el('td', {}, a.locked
      ? el('button', { type: 'button', className: 'unlock', title: '多次密码错误已锁定',
        onclick: guarded(async () => { await api('POST', `/supervisor/agents/${a.id}/unlock`); await loadSupervisor(); }) }, '解锁')
      : a.presence),
    el('td', {}, `${a.load}/${a.capacity}`))));
}

async function toggleSupervisor() {
  const panel = $('#supervisor');
  panel.hidden = !panel.hidden;
  $('#workspace').classList.toggle('with-supervisor', !panel.hidden);
  if (!panel.hidden) await loadSupervisor();
}

// ---- wiring ----
$('#login-form').addEventListener('submit', guarded(login));
$('#logout').addEventListener('click', logout);
$('#presence').addEventListener('change', guarded(async () => {
  S.agent = await api('PUT', '/agents/me/presence', { presence: $('#presence').value });
  await Promise.all([loadHeld(), loadQueue()]);
}));
$('#refresh-queue').addEventListener('click', guarded(loadQueue));
$('#reply-send').addEventListener('click', guarded(sendReply));
// "typing…" for the customer while the agent writes; at most every 10 s (WeChat shows it for 15 s).
$('#reply-input').addEventListener('input', () => {
  if (!S.open || Date.now() - (S.typedAt || 0) < 10000) return;
  S.typedAt = Date.now();
  api('POST', `/agents/conversations/${S.open}/typing`).catch(() => {});
});
$('#reply-input').addEventListener('keydown', (e) => {
  if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); guarded(sendReply)(); }
});
$('#canned').addEventListener('change', () => { if ($('#canned').value) $('#reply-input').value = $('#canned').value; });
$('#note-add').addEventListener('click', guarded(addNote));
$('#claim').addEventListener('click', guarded(claim));
$('#transfer').addEventListener('click', guarded(transfer));
$('#close').addEventListener('click', guarded(closeConversation));
$('#show-supervisor').addEventListener('click', guarded(toggleSupervisor));
$('#error').addEventListener('click', () => showError(''));
wireVideo();
if (S.token) guarded(start)();
