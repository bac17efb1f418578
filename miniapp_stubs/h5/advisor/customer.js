// Shared by the advisor pages (booking, upload, guide): the customer's session and the API.
// Opened as …?ticket=… (single-use, 60 s: POST /miniapp/tickets {purpose: "advisor_page"}) by the mini-program's
// web-view or the simulator, never with the session token. The ticket leaves the address bar at once (history,
// later Referer) and is traded once for a session this tab keeps in sessionStorage (a reload uses the kept one).
'use strict';

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
const TOKEN_KEY = 'yt-customer-token';
let TOKEN = '';
let SIGN_IN_ERROR = '';

function takeTicket() {
  const ticket = params.get('ticket');
  // An old link's ?token= is never read, only dropped from the address bar with the ticket.
  if (ticket !== null || params.has('token')) {
    params.delete('ticket');
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + (rest ? `?${rest}` : ''));
  }
  return ticket;
}

async function signIn(ticket) {
  if (ticket) {
    let response = null;
    try {
      response = await fetch('/miniapp/tickets/redeem', {
        method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ ticket, purpose: 'advisor_page' }),
      });
    } catch (e) { SIGN_IN_ERROR = '网络连接失败，请稍后再试'; }
    if (response && response.ok) {
      TOKEN = (await response.json()).token;
      sessionStorage.setItem(TOKEN_KEY, TOKEN);
    } else {
      // A refused link says so rather than quietly using an older session kept in this tab.
      sessionStorage.removeItem(TOKEN_KEY);
      if (response) SIGN_IN_ERROR = '链接已失效（只能打开一次，1 分钟内有效），请返回重新进入。';
    }
  } else {
    TOKEN = sessionStorage.getItem(TOKEN_KEY) || '';
  }
  if (!TOKEN) SIGN_IN_ERROR = SIGN_IN_ERROR || '请从小程序或聊天页进入。';
  document.body.dataset.signIn = TOKEN ? 'ok' : 'refused';
}

// Every API call waits for the sign-in (pages start calling at once).
const SIGNED_IN = signIn(takeTicket());

// A page's start: signed in, or the page says why not (and never reaches data-status=ready).
async function signedIn() {
  await SIGNED_IN;
  if (!TOKEN) {
    document.body.dataset.status = 'error';
    throw new ApiError(SIGN_IN_ERROR, 'not_authenticated', 401);
  }
}

class ApiError extends Error {
  constructor(message, code, status) { super(message); this.code = code; this.status = status; }
}

async function api(method, path, body, isForm) {
  await SIGNED_IN;
  if (!TOKEN) throw new ApiError(SIGN_IN_ERROR, 'not_authenticated', 401);
  const init = { method, headers: { Authorization: `Bearer ${TOKEN}` } };
  if (body !== undefined) {
    if (isForm) init.body = body;
    else { init.headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
  }
  let res;
  try { res = await fetch(path, init); } catch (e) { throw new ApiError('网络连接失败，请稍后再试', 'network', 0); }
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (res.ok) return data;
  const err = data && data.error;
  if (res.status === 401) throw new ApiError('登录已过期，请返回重新进入', 'not_authenticated', 401);
  throw new ApiError((err && err.message) || `请求失败（${res.status}）`, (err && err.code) || `http_${res.status}`, res.status);
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node[key] = value;
  }
  for (const child of children) node.append(child); // always as text, never HTML
  return node;
}

function showError(message) { const e = $('#error'); e.textContent = message || ''; e.hidden = !message; }
function showNotice(message) {
  const n = $('#notice'); n.textContent = message; n.hidden = false;
  clearTimeout(showNotice.timer); showNotice.timer = setTimeout(() => { n.hidden = true; }, 8000);
}
function guarded(fn) {
  return async (...args) => { try { showError(''); await fn(...args); } catch (e) { showError(e.message); } };
}
