// Shared by the advisor pages (booking, upload, guide): the customer's token and the API.
// Opened as …?token=… by the mini-program's web-view (or the simulator); the token moves to sessionStorage
// at once so it leaves the address bar (and any later Referer).
'use strict';

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);
(function keepToken() {
  const token = params.get('token');
  if (token) {
    sessionStorage.setItem('yt-customer-token', token);
    params.delete('token');
    const rest = params.toString();
    history.replaceState(null, '', location.pathname + (rest ? `?${rest}` : ''));
  }
})();
const TOKEN = sessionStorage.getItem('yt-customer-token') || '';

class ApiError extends Error {
  constructor(message, code, status) { super(message); this.code = code; this.status = status; }
}

async function api(method, path, body, isForm) {
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
