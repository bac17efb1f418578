// 云厅 mini-program entry. Plain ES2017, no npm dependencies.
const { rawRequest, toError } = require('./utils/api.js');

const AUTH_KEY = 'yunting_auth';

App({
  globalData: {
    // Backend base URL (no trailing slash). For a local http address tick
    // 「不校验合法域名、web-view（业务域名）、TLS 版本以及 HTTPS 证书」 in WeChat DevTools;
    // a real release needs an https/wss domain listed in the mini-program admin console.
    apiBase: 'http://127.0.0.1:8000',
    // The subscribe-message template for 客服回复通知 (YUNTING_MINIAPP_REPLY_TEMPLATE_ID on the backend).
    replyTemplateId: 'yt-agent-reply-dev',
    auth: null, // { token, customer_id, expires_at (ms) }
  },

  onLaunch() {
    // Storage survives restarts of the mini-program, so a still-valid token is reused.
    const saved = wx.getStorageSync(AUTH_KEY);
    if (saved && saved.token && saved.expires_at > Date.now()) this.globalData.auth = saved;
  },

  // Current token, or '' when there is none or it expires within 30 s.
  getToken() {
    const a = this.globalData.auth;
    return a && a.expires_at > Date.now() + 30000 ? a.token : '';
  },

  // Resolves to a usable token, logging in first when needed.
  ensureLogin() {
    const t = this.getToken();
    return t ? Promise.resolve(t) : this.login();
  },

  // wx.login → POST /miniapp/login. A wx.login code is single-use and lives 5 minutes,
  // so every attempt asks WeChat for a fresh one; concurrent callers share one login.
  login() {
    if (this._loginPromise) return this._loginPromise;
    const done = (v) => { this._loginPromise = null; return v; };
    const fail = (e) => { this._loginPromise = null; throw e; };
    this._loginPromise = this._loginOnce()
      .catch((err) => {
        // e.g. the code was consumed by a parallel attempt: one more try with a new code
        if (err.code === 'wechat_code_used' || err.code === 'wechat_code_invalid') return this._loginOnce();
        throw err;
      })
      .then(done, fail);
    return this._loginPromise;
  },

  _loginOnce() {
    return new Promise((resolve, reject) => {
      wx.login({
        success: (r) => resolve(r.code),
        fail: () => reject(Object.assign(new Error('微信登录失败，请稍后再试'), { code: 'wx_login_failed' })),
      });
    })
      .then((code) => rawRequest('POST', '/miniapp/login', { code }, ''))
      .then((res) => {
        if (res.statusCode !== 200 || !res.data || !res.data.token) throw toError(res);
        const d = res.data;
        const auth = {
          token: d.token,
          customer_id: d.customer_id,
          expires_at: Date.now() + (d.expires_in || 3600) * 1000,
        };
        this.globalData.auth = auth;
        wx.setStorageSync(AUTH_KEY, auth);
        return auth.token;
      });
  },

  // Forget the token (called on 401 before logging in again).
  logout() {
    this.globalData.auth = null;
    wx.removeStorageSync(AUTH_KEY);
  },
});
