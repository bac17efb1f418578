// Promise wrapper around wx.request for the Yunting backend.
// getApp() is called lazily (inside functions), because app.js itself requires this file.

// Turn a non-2xx wx.request result into an Error carrying the API's {"error": {code, message}}.
function toError(res) {
  const body = res && res.data;
  const e = body && typeof body === 'object' ? body.error : null;
  const status = res ? res.statusCode : 0;
  const err = new Error((e && e.message) || '服务暂时不可用（' + status + '），请稍后再试');
  err.code = (e && e.code) || 'http_' + status;
  err.status = status;
  return err;
}

// One HTTP call. Resolves with the raw result for ANY status code (wx.request calls `success`
// even for 4xx/5xx); rejects only when the network fails or times out.
function rawRequest(method, path, data, token) {
  return new Promise((resolve, reject) => {
    const header = { 'content-type': 'application/json' };
    if (token) header.Authorization = 'Bearer ' + token;
    wx.request({
      url: getApp().globalData.apiBase + path,
      method,
      data,
      header,
      timeout: 15000,
      success: resolve,
      fail: () => {
        const err = new Error('网络连接失败，请检查网络后再试');
        err.code = 'network';
        err.status = 0;
        reject(err);
      },
    });
  });
}

// Authenticated call: adds the bearer token; on 401 logs in again once and repeats the call.
function request(method, path, data) {
  const app = getApp();
  return app.ensureLogin()
    .then((token) => rawRequest(method, path, data, token))
    .then((res) => {
      if (res.statusCode !== 401) return res;
      app.logout();
      return app.login().then((token) => rawRequest(method, path, data, token));
    })
    .then((res) => {
      if (res.statusCode >= 200 && res.statusCode < 300) return res.data;
      throw toError(res);
    });
}

// RFC 4122 v4 UUID (the mini-program runtime has no crypto.randomUUID).
function uuid() {
  return 'xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx'.replace(/[xy]/g, (c) => {
    const r = (Math.random() * 16) | 0;
    return (c === 'x' ? r : (r & 0x3) | 0x8).toString(16);
  });
}

function delay(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// POST /miniapp/messages. A network failure or 5xx is retried once with the SAME
// client_msg_id: the backend processes it only once and returns the same result.
function sendMessage(text, clientMsgId) {
  const body = { text, client_msg_id: clientMsgId || uuid() };
  return request('POST', '/miniapp/messages', body).catch((err) => {
    if (err.code !== 'network' && !(err.status >= 500)) throw err;
    return delay(1000).then(() => request('POST', '/miniapp/messages', body));
  });
}

// GET /miniapp/messages[?after_id=N] → { conversation, messages } (oldest first).
function getMessages(afterId) {
  return request('GET', afterId ? '/miniapp/messages?after_id=' + afterId : '/miniapp/messages');
}

// POST /miniapp/tickets → { ticket, expires_in }: single-use (60 s), for a URL that can't carry a header
// (the WebSocket, the video page's and the booking page's web-views). The session token itself never goes in a URL.
function mintTicket(purpose) {
  return request('POST', '/miniapp/tickets', { purpose });
}

module.exports = { rawRequest, request, toError, uuid, sendMessage, getMessages, mintTicket };
