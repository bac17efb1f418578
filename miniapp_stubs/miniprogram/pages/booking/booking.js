// Booking page: asks for the reminder (a subscribe message needs the user's tap, wx.requestSubscribeMessage),
// then opens the backend's booking page in a web-view: {apiBase}/h5/advisor/booking.html?ticket=…
// The ticket is single-use and lives 60 s (POST /miniapp/tickets {purpose: "advisor_page"}); the page trades it
// for its own session. The session token never goes in a URL (web-view URLs end up in logs and history).
// The template id is the bank's, from the WeChat console.
const api = require('../../utils/api.js');

const app = getApp();
const REMINDER_TEMPLATE_ID = 'yt-appointment-reminder';

Page({
  data: { src: '', error: '' },

  onLoad() {
    const open = () => api.mintTicket('advisor_page').then((r) => {
      this.setData({ src: app.globalData.apiBase + '/h5/advisor/booking.html?ticket=' + encodeURIComponent(r.ticket) });
    }, (err) => this.setData({ error: err.message || '登录失败，请返回重试' }));
    // One grant = one reminder; refusing still lets the customer book (they just get no reminder).
    wx.requestSubscribeMessage({ tmplIds: [REMINDER_TEMPLATE_ID], complete: open });
  },
});
