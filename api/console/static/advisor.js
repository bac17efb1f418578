// 云厅 console: advisor services (docs/advisor.md) — documents and request cards, guided steps with live
// progress, booking for a customer, the appointment day with case cards, working hours, named advisors.
// Loaded before console.js; uses its helpers ($, el, api, guarded, showAlert, S) only when called.
'use strict';

const WEEKDAYS = ['周一', '周二', '周三', '周四', '周五', '周六', '周日'];
const APPT_STATES = { booked: '已预约', joined: '已进入', completed: '已完成', cancelled: '已取消', no_show: '未到场' };
const PRESENCE_NAMES = { online: '在线', away: '暂离', offline: '离线' };
const A = { slots: [], objectUrl: null, guides: new Map() };
// <input type=time> can't say 24:00 (a period to midnight): shown as 23:59 and saved back as 24:00.
const toInput = (t) => (t === '24:00' ? '23:59' : t);
const fromInput = (t) => (t === '23:59' ? '24:00' : t);

const Advisor = {
  async started() {
    const supervisor = ['supervisor', 'admin'].includes(S.agent.role);
    $('#day-group').hidden = !supervisor;
    // Empty until the first load: the server's "today" is the bank's day, whatever the browser's clock zone says.
    $('#day-date').value = '';
    if (supervisor) {
      const overview = await api('GET', '/supervisor/overview');
      $('#advisor-agent').replaceChildren(...overview.agents.filter((a) => a.role !== 'nlu_editor')
        .map((a) => el('option', { value: a.id }, a.display_name)));
    }
  },

  async opened(view, mine) {
    const c = view.conversation;
    const card = view.handoff_card || {};
    A.customerId = c.customer_id;
    const advisor = await api('GET', `/agents/customers/${c.customer_id}/advisor`);
    const note = card.advisor ? `（${card.advisor.note}）` : '';
    $('#card-advisor').textContent = advisor ? `${advisor.display_name}${note}` : (note || '—');
    const appt = card.appointment;
    $('#card-appointment').textContent = appt
      ? `${fmtTime(appt.starts_at)} · ${appt.mode === 'video' ? '视频' : '文字'} · ${appt.topic || '未填写事项'}（${appt.agent_name}）` : '—';
    for (const sel of ['#doc-request-send', '#guide-send']) $(sel).disabled = !mine;
    const supervisor = ['supervisor', 'admin'].includes(S.agent.role);
    $('#advisor-assign').hidden = !supervisor;
    if (supervisor && advisor) $('#advisor-agent').value = String(advisor.agent_id);
    await Promise.all([loadDocuments(c.id), loadGuides(c.id), loadBookSlots()]);
  },

  async onEvent(event) {
    if (event.type === 'guide_progress' && S.open === event.guide.conversation_id) {
      A.guides.set(event.guide.id, event.guide);
      renderGuides();
    }
    if (event.type === 'document' && S.open === event.conversation_id) await loadDocuments(S.open);
    if (event.type === 'appointment_changed' || event.type === 'appointment_joined') {
      const words = { booked: '新预约', rescheduled: '预约已改期', cancelled: '预约已取消', no_show: '客户未按预约到场' };
      showAlert(event.type === 'appointment_joined' ? '客户已按预约进入' : (words[event.change] || '预约有变化'));
      if (!$('#day').hidden) await loadDay();
    }
  },
};

function fmtTime(iso, withDay = true) {
  const options = { hour: '2-digit', minute: '2-digit', hour12: false };
  if (withDay) Object.assign(options, { month: 'numeric', day: 'numeric' });
  return new Date(iso).toLocaleString('zh-CN', options);
}

// ---- documents ----
async function loadDocuments(conversationId) {
  const docs = await api('GET', `/agents/conversations/${conversationId}/documents`);
  $('#documents-count').textContent = docs.length ? `（${docs.length}）` : '';
  $('#documents').replaceChildren(...docs.map((d) => el('li', { dataset: { documentId: d.id } },
    `${d.kind === 'pdf' ? 'PDF' : '照片'} · ${Math.ceil(d.size_bytes / 1024)} KB · ${fmtTime(d.created_at)} · SHA-256 ${d.sha256.slice(0, 12)}… `,
    el('button', { type: 'button', className: 'view', onclick: guarded(() => viewDocument(d)) }, '查看（记入审计）'))));
  if (!docs.length) $('#document-viewer').hidden = true;
}

async function viewDocument(doc) {
  // Fetched with the agent's token (never a token in a URL); the server audits the view before sending.
  const response = await fetch(`/agents/documents/${doc.id}`, { headers: { Authorization: `Bearer ${S.token}` } });
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    throw new Error((data.error && data.error.message) || `无法打开（HTTP ${response.status}）`);
  }
  const blob = await response.blob();
  if (A.objectUrl) URL.revokeObjectURL(A.objectUrl);
  A.objectUrl = URL.createObjectURL(blob);
  $('#document-viewer').hidden = false;
  $('#document-viewer').dataset.documentId = doc.id;
  const image = doc.kind === 'image';
  $('#document-image').hidden = !image;
  $('#document-link').hidden = image;
  if (image) $('#document-image').src = A.objectUrl;
  else $('#document-link').href = A.objectUrl;
}

async function requestDocument() {
  const what = $('#doc-request-what').value.trim();
  if (!what || !S.open) return;
  await api('POST', `/agents/conversations/${S.open}/document-requests`, { what });
  $('#doc-request-what').value = '';
  showAlert('已请客户上传');
  await openConversation(S.open);
}

// ---- guided steps ----
async function loadGuides(conversationId) {
  const guides = await api('GET', `/agents/conversations/${conversationId}/guides`);
  A.guides = new Map(guides.map((g) => [g.id, g]));
  renderGuides();
}

function renderGuides() {
  const states = { sent: '已发送，客户未打开', in_progress: '进行中', done: '已完成', stopped: '已结束' };
  $('#guides').replaceChildren(...[...A.guides.values()].map((g) => el('li', {
    dataset: { guideId: g.id, step: g.current_step, state: g.state },
  }, el('div', {}, `${g.title}（${g.page}）· ${states[g.state] || g.state}`
      + (g.current_step ? ` · 客户在第 ${g.current_step}/${g.steps.length} 步` : '')),
  el('div', { className: 'steps-line' }, ...g.steps.map((text, i) => el('span', {
    className: i + 1 === g.current_step ? 'current' : (i + 1 < g.current_step || g.state === 'done' ? 'passed' : ''),
  }, `${i + 1}. ${text}`))),
  ...(g.state === 'sent' || g.state === 'in_progress' ? [el('button', {
    type: 'button', className: 'stop', onclick: guarded(async () => {
      A.guides.set(g.id, await api('POST', `/agents/guides/${g.id}/stop`)); renderGuides();
    }),
  }, '结束指导')] : []))));
}

async function sendGuide() {
  const steps = $('#guide-steps').value.split('\n').map((s) => s.trim()).filter(Boolean);
  await api('POST', `/agents/conversations/${S.open}/guides`,
    { page: $('#guide-page').value.trim(), title: $('#guide-title').value.trim(), steps });
  $('#guide-steps').value = '';
  showAlert('指导卡片已发送');
  await openConversation(S.open);
}

// ---- booking for the open conversation's customer ----
async function loadBookSlots() {
  const found = await api('GET', '/agents/appointments/slots');
  A.slots = found.slots.slice(0, 60);
  const options = A.slots.map((s) => el('option', { value: s.starts_at }, fmtTime(s.starts_at)));
  $('#book-slot').replaceChildren(...(options.length ? options : [el('option', { value: '' }, '没有空闲时段：请先设置工作时间')]));
}

async function bookForCustomer() {
  if (!$('#book-slot').value) return;
  await api('POST', '/agents/appointments', { conversation_id: S.open, starts_at: $('#book-slot').value,
    mode: $('#book-mode').value, topic: $('#book-topic').value.trim() });
  $('#book-topic').value = '';
  showAlert('已为客户预约');
  await Promise.all([loadBookSlots(), openConversation(S.open)]);
  if (!$('#day').hidden) await loadDay();
}

async function saveAdvisor() {
  await api('PUT', `/supervisor/customers/${A.customerId}/advisor`, { agent_id: Number($('#advisor-agent').value) });
  showAlert('已指定专属客户经理');
  await openConversation(S.open);
}

// ---- the day ----
async function toggleDay() {
  const panel = $('#day');
  panel.hidden = !panel.hidden;
  if (!panel.hidden && !$('#supervisor').hidden) await toggleSupervisor();
  $('#workspace').classList.toggle('with-day', !panel.hidden);
  if (!panel.hidden) await Promise.all([loadDay(), loadSchedule(), loadBookSlots()]);
}

let dayLoads = 0;
async function loadDay() {
  const mine = ++dayLoads;
  const day = $('#day-date').value;
  const group = $('#day-group').value;
  const query = day ? `day=${day}` : '';
  const data = group
    ? await api('GET', `/supervisor/appointments/day?group=${group}&${query}`)
    : await api('GET', `/agents/appointments/day?${query}`);
  if (mine !== dayLoads) return; // a newer date or group was chosen while this one loaded: it draws, not this
  $('#day').dataset.date = data.date;
  if (!day) $('#day-date').value = data.date;
  $('#day-agents').replaceChildren(...data.agents.map((a) => el('div', { className: 'agent-day', dataset: { agentId: a.agent_id } },
    el('h3', {}, `${a.display_name}（${PRESENCE_NAMES[a.presence] || a.presence}）· ${a.entries.length} 个预约`),
    ...(a.entries.length ? a.entries.map(appointmentCard) : [el('p', { className: 'case' }, '当天没有预约')]))));
}

function appointmentCard(entry) {
  const a = entry.appointment;
  const c = entry.case_card;
  const history = c.no_shows ? `，曾 ${c.no_shows} 次未到场` : '';
  const node = el('div', { className: 'appt', dataset: { appointmentId: a.id, state: a.state } },
    el('div', {}, el('span', { className: 'time' }, `${fmtTime(a.starts_at, false)}–${fmtTime(a.ends_at, false)}`),
      ` · ${a.mode === 'video' ? '视频' : '文字'} · ${APPT_STATES[a.state] || a.state} · 客户 #${c.customer_id}`),
    el('div', {}, `事项：${a.topic || '未填写'}`),
    el('div', { className: 'case' }, `上次诉求：${c.last_scenario || c.last_intent || '—'}；已传资料 ${c.documents} 份${history}`),
    el('div', { className: 'case summary' }, c.last_summary || ''));
  if (a.state === 'booked' && (a.agent_id === S.agent.id || ['supervisor', 'admin'].includes(S.agent.role))) {
    const select = el('select', { className: 'new-time' }, ...A.slots.map((s) => el('option', { value: s.starts_at }, fmtTime(s.starts_at))));
    node.append(el('div', {}, select,
      el('button', { type: 'button', className: 'reschedule', onclick: guarded(async () => {
        await api('POST', `/agents/appointments/${a.id}/reschedule`, { starts_at: select.value });
        showAlert('已改期，客户会收到通知'); await Promise.all([loadDay(), loadBookSlots()]);
      }) }, '改期'),
      el('button', { type: 'button', className: 'cancel', onclick: guarded(async () => {
        await api('POST', `/agents/appointments/${a.id}/cancel`, { reason: '客户经理取消' });
        showAlert('已取消，客户会收到通知'); await Promise.all([loadDay(), loadBookSlots()]);
      }) }, '取消')));
  }
  if (c.last_conversation_id) {
    node.append(el('button', { type: 'button', className: 'open-case', onclick: guarded(() => openConversation(c.last_conversation_id)) }, '查看会话'));
  }
  return node;
}

async function loadSchedule() {
  const schedule = await api('GET', '/agents/me/schedule');
  const rows = [];
  WEEKDAYS.forEach((name, day) => {
    const periods = schedule.periods.filter((p) => p.weekday === day);
    for (const p of [...periods, { start: '', end: '' }]) { // each period, and one blank to add another
      rows.push(el('tr', { dataset: { weekday: day } }, el('td', {}, name),
        el('td', {}, el('input', { type: 'time', className: 'start', value: toInput(p.start) })),
        el('td', {}, el('input', { type: 'time', className: 'end', value: toInput(p.end) }))));
    }
  });
  $('#schedule tbody').replaceChildren(...rows);
}

async function saveSchedule() {
  const periods = [...document.querySelectorAll('#schedule tr')].map((row) => ({
    weekday: Number(row.dataset.weekday), start: row.querySelector('.start').value,
    end: fromInput(row.querySelector('.end').value),
  })).filter((p) => p.start && p.end);
  await api('PUT', '/agents/me/schedule', { periods });
  showAlert('工作时间已保存');
  await loadBookSlots();
}

document.addEventListener('DOMContentLoaded', () => {
  $('#show-day').addEventListener('click', guarded(toggleDay));
  $('#day-date').addEventListener('change', guarded(loadDay));
  $('#day-group').addEventListener('change', guarded(loadDay));
  $('#schedule-save').addEventListener('click', guarded(saveSchedule));
  $('#doc-request-send').addEventListener('click', guarded(requestDocument));
  $('#guide-send').addEventListener('click', guarded(sendGuide));
  $('#book-send').addEventListener('click', guarded(bookForCustomer));
  $('#advisor-save').addEventListener('click', guarded(saveAdvisor));
});
