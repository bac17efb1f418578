// 云厅 H5 simulator, 公众号 mode: the same person writes to the bank's official account instead.
// WeChat's side is played by the emulator: POST {emulator_base}/_sim/oa/say pushes the text to our
// /wechat/oa exactly as WeChat would (signed, encrypted in safe mode) and returns the passive reply;
// customer-service messages (agent replies, late bot answers, queue notices) are polled from
// GET {emulator_base}/_sim/sent?openid=..&api=custom. Uses simulator.js's globals ($, S, fetchJson ...).
'use strict';

const OA_POLL_MS = 2000;
const OA = {
  gen: 0,        // S.gen of the OA session; a new login or a channel switch ends it
  appid: '',
  openid: '',
  sentSeen: 0,   // /_sim/sent is an append-only log: items before this index are shown already
  timer: 0,
  polling: false,
};

const emulatorBase = () => S.config.emulator_base.replace(/\/$/, '');

// The emulator pushes to the account's configured server URL; point it at this backend if it isn't.
// Token, EncodingAESKey and mode stay as configured (the emulator starts with the app's own settings).
async function oaEnsureServer() {
  const base = emulatorBase();
  const url = `${location.origin}/wechat/oa`;
  const server = await fetchJson(`${base}/_sim/oa/server`);
  if (server.url !== url) {
    await fetchJson(`${base}/_sim/oa/server`, jsonPost({
      appid: server.appid, url, token: server.token,
      encoding_aes_key: server.encoding_aes_key, mode: server.mode,
    }));
  }
  return server.appid;
}

// Called by onLogin (simulator.js) after the page was reset, in 公众号 mode.
async function oaLogin(gen) {
  if (!S.config) S.config = await fetchJson('/simulator/config');
  const appid = await oaEnsureServer();
  const base = emulatorBase();
  const who = await fetchJson(`${base}/_sim/identity?appid=${encodeURIComponent(appid)}` +
    `&person=${encodeURIComponent(S.person)}`);
  const earlier = await fetchJson(`${base}/_sim/sent?openid=${encodeURIComponent(who.openid)}&api=custom`);
  if (gen !== S.gen) return;
  Object.assign(OA, { gen, appid, openid: who.openid, sentSeen: earlier.items.length });
  $('#state').dataset.state = 'oa';
  $('#state').dataset.conversationId = '';
  $('#state').textContent = '公众号 · 云厅银行';
  clearInterval(OA.timer);
  OA.timer = setInterval(oaPoll, OA_POLL_MS);
}

function oaStop() {
  clearInterval(OA.timer);
  OA.timer = 0;
  OA.gen = -1;
}

// An official-account bubble: .msg[data-channel=oa][data-sender][data-via]; no data-id (not a stored message).
function oaBubble(sender, text, via) {
  const el = document.createElement('div');
  el.className = 'msg';
  el.dataset.channel = 'oa';
  el.dataset.sender = sender;
  if (via) el.dataset.via = via;
  const label = sender === 'customer' ? '' : (via === 'custom' ? '公众号 · 客服消息' : '公众号');
  bubble(el, label, text, new Date().toLocaleTimeString('zh-CN', { hour: '2-digit', minute: '2-digit' }));
  const box = $('#messages');
  box.append(el);
  box.querySelector('.hint')?.remove();
  scrollDown();
  return el;
}

// What WeChat would show for a reply (passive XML fields) or a customer-service message (JSON body).
function oaText(reply) {
  if (!reply) return '';
  if (reply.Content !== undefined) return reply.Content;
  if (reply.msgtype === 'text') return reply.text.content;
  if (reply.msgtype === 'miniprogrampage') return `[小程序] ${reply.miniprogrampage.title || ''}`;
  const type = reply.MsgType || reply.msgtype || '?';
  return `[${type}]`;
}

async function oaSay(text) {
  const gen = S.gen;
  const el = oaBubble('customer', text, '');
  el.classList.add('pending');
  try {
    const res = await fetchJson(`${emulatorBase()}/_sim/oa/say`,
      jsonPost({ appid: OA.appid, person: S.person, text }));
    if (gen !== S.gen) return;
    el.classList.remove('pending');
    if (res.error) throw new ApiError(`公众号暂时无法提供服务（${res.error}）`, 'oa_push', res.status || 0);
    if (res.reply) oaBubble('account', oaText(res.reply), 'passive');
    clearError();
    oaPoll(); // a late answer may already be there
  } catch (e) {
    if (gen !== S.gen) return;
    el.classList.remove('pending');
    el.classList.add('failed');
    showError(e);
  }
}

// New customer-service messages for this openid, each shown once.
async function oaPoll() {
  if (OA.polling || OA.gen !== S.gen || !OA.openid) return;
  OA.polling = true;
  const gen = S.gen;
  try {
    const data = await fetchJson(`${emulatorBase()}/_sim/sent?openid=${encodeURIComponent(OA.openid)}&api=custom`);
    if (gen !== S.gen || OA.gen !== gen) return;
    if (data.items.length < OA.sentSeen) OA.sentSeen = 0; // the emulator's log was cleared
    for (const item of data.items.slice(OA.sentSeen)) oaBubble('account', oaText(item.body), 'custom');
    OA.sentSeen = data.items.length;
  } catch (e) {
    if (e.code !== 'network' && gen === S.gen) showError(e);
  } finally {
    OA.polling = false;
  }
}
