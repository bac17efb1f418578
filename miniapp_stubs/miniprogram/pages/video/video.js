// Video page stub: a web-view that loads the backend's WebRTC H5 page.
// The backend serves {apiBase}/h5/video/: the recording notice and consent, then the call.
// WeChat rules: the H5 domain must be configured as a 业务域名 (https) for a released mini-program
// (in DevTools, tick 「不校验合法域名…」); a web-view always fills the whole page.
const api = require('../../utils/api.js');

const app = getApp();

Page({
  data: { src: '', error: '' },

  // The web-view URL carries a single-use ticket (60 s), never the session token.
  onLoad(query) {
    api.mintTicket('video_page').then((r) => {
      const src = app.globalData.apiBase + '/h5/video/' +
        '?conversation_id=' + encodeURIComponent(query.conversation_id || '') +
        '&ticket=' + encodeURIComponent(r.ticket);
      this.setData({ src });
    }, (err) => this.setData({ error: err.message || '登录失败，请返回重试' }));
  },
});
