// 云厅 booking page: free slots of the customer's advisor (or a group), book, reschedule, cancel, and at the
// slot one tap 进入 joins (a video appointment opens the video page). All times shown in the bank's zone.
'use strict';

const STATE_NAMES = { booked: '已预约', joined: '进行中', completed: '已完成', cancelled: '已取消', no_show: '未到场' };
const B = { slots: null, chosen: null, rescheduling: null, tz: 'Asia/Shanghai', hasAdvisor: false };

function fmt(iso, withDay = true) {
  const options = { timeZone: B.tz, hour: '2-digit', minute: '2-digit', hour12: false };
  if (withDay) Object.assign(options, { month: 'numeric', day: 'numeric', weekday: 'short' });
  return new Date(iso).toLocaleString('zh-CN', options);
}

function dayKey(iso) {
  return new Date(iso).toLocaleDateString('zh-CN', { timeZone: B.tz, month: 'numeric', day: 'numeric', weekday: 'long' });
}

async function loadSlots() {
  const query = B.hasAdvisor ? 'with=advisor' : `with=group&group=${encodeURIComponent($('#group').value)}`;
  B.slots = await api('GET', `/miniapp/appointments/slots?${query}`);
  B.tz = B.slots.timezone || B.tz;
  B.chosen = null;
  $('#book').disabled = true;
  $('#chosen').textContent = '请选择一个时间';
  B.byDay = new Map();
  for (const slot of B.slots.slots) {
    const key = dayKey(slot.starts_at);
    if (!B.byDay.has(key)) B.byDay.set(key, []);
    B.byDay.get(key).push(slot);
  }
  const days = [...B.byDay.keys()];
  $('#days').replaceChildren(...days.map((day, i) => el('button', {
    type: 'button', className: 'day-tab secondary', dataset: { day: i }, onclick: () => showDay(day),
  }, day)));
  if (days.length) showDay(days.includes(B.day) ? B.day : days[0]);
  else $('#slots').replaceChildren(el('p', {}, '近期没有可预约的时间，请稍后再来看看。'));
}

// One day's slots at a time: a long list of times is hard to read on a phone.
function showDay(day) {
  B.day = day;
  document.querySelectorAll('.day-tab').forEach((b) => b.classList.toggle('chosen', b.textContent === day));
  $('#slots').replaceChildren(el('div', { className: 'slots' }, ...B.byDay.get(day).map((slot) => el('button', {
    type: 'button', className: 'slot', dataset: { startsAt: slot.starts_at }, onclick: () => choose(slot),
  }, fmt(slot.starts_at, false)))));
}

function choose(slot) {
  B.chosen = slot;
  document.querySelectorAll('.slot').forEach((b) => b.classList.toggle('chosen', b.dataset.startsAt === slot.starts_at));
  $('#chosen').textContent = `已选：${fmt(slot.starts_at)}`;
  $('#book').disabled = false;
}

async function loadAppointments() {
  const list = await api('GET', '/miniapp/appointments');
  $('#no-appointments').hidden = list.length > 0;
  $('#appointments').replaceChildren(...list.map((a) => {
    const item = el('li', { dataset: { id: a.id, state: a.state } },
      el('div', {}, `${fmt(a.starts_at)} · ${a.mode === 'video' ? '视频' : '文字'} · 客户经理${a.agent_name || ''}`),
      el('div', {}, a.topic ? `事项：${a.topic}` : ''),
      el('span', { className: 'state' }, STATE_NAMES[a.state] || a.state),
      a.cancelled_by === 'agent' ? el('span', {}, '（客户经理已取消）') : '');
    if (a.state === 'booked' || a.state === 'joined') {
      item.append(el('div', {},
        el('button', { type: 'button', className: 'join primary', onclick: guarded(() => join(a)) }, '进入'),
        ...(a.state === 'booked' ? [
          el('button', { type: 'button', className: 'reschedule secondary', onclick: () => startReschedule(a) }, '改期'),
          el('button', { type: 'button', className: 'cancel danger', onclick: guarded(() => cancel(a)) }, '取消预约'),
        ] : [])));
    }
    return item;
  }));
}

async function book() {
  if (!B.chosen) return;
  if (B.rescheduling) {
    await api('POST', `/miniapp/appointments/${B.rescheduling.id}/reschedule`, { starts_at: B.chosen.starts_at });
    showNotice(`已改到 ${fmt(B.chosen.starts_at)}`);
    endReschedule();
  } else {
    const body = { starts_at: B.chosen.starts_at, mode: $('#mode').value, topic: $('#topic').value.trim(),
      with: B.hasAdvisor ? 'advisor' : 'group', ...(B.hasAdvisor ? {} : { group: $('#group').value }) };
    const made = await api('POST', '/miniapp/appointments', body);
    showNotice(`预约成功：${fmt(made.starts_at)}，客户经理${made.agent_name || ''}。开始前会提醒您。`);
    $('#topic').value = '';
  }
  await Promise.all([loadAppointments(), loadSlots()]);
}

function startReschedule(appointment) {
  B.rescheduling = appointment;
  document.body.dataset.mode = 'reschedule';
  $('#booking-title').textContent = `改期：原定 ${fmt(appointment.starts_at)}，请选择新的时间`;
  $('#book').textContent = '确认改期';
  $('#cancel-reschedule').hidden = false;
  $('#booking').scrollIntoView();
}

function endReschedule() {
  B.rescheduling = null;
  document.body.dataset.mode = 'book';
  $('#booking-title').textContent = '预约新的时间';
  $('#book').textContent = '确认预约';
  $('#cancel-reschedule').hidden = true;
}

async function cancel(appointment) {
  await api('POST', `/miniapp/appointments/${appointment.id}/cancel`, {});
  showNotice('预约已取消');
  await Promise.all([loadAppointments(), loadSlots()]);
}

async function join(appointment) {
  const joined = await api('POST', `/miniapp/appointments/${appointment.id}/join`);
  if (joined.url) {
    sessionStorage.setItem('yunting_video_token', TOKEN); // same tab: the video page reads its session there
    location.href = joined.url;
    return;
  }
  showNotice('已为您接通客户经理，请回到聊天页继续。');
  await loadAppointments();
}

async function start() {
  await signedIn();
  const advisor = await api('GET', '/miniapp/advisor');
  B.hasAdvisor = Boolean(advisor);
  $('#advisor').textContent = advisor ? `您的专属客户经理：${advisor.display_name}` : '您还没有专属客户经理，可以预约业务组的客户经理。';
  $('#group-choice').hidden = B.hasAdvisor;
  await Promise.all([loadAppointments(), loadSlots()]);
  document.body.dataset.status = 'ready';
}

$('#book').addEventListener('click', guarded(book));
$('#cancel-reschedule').addEventListener('click', endReschedule);
$('#group').addEventListener('change', guarded(loadSlots));
$('#error').addEventListener('click', () => showError(''));
guarded(async () => { try { await start(); } catch (e) { document.body.dataset.status = 'error'; throw e; } })();
