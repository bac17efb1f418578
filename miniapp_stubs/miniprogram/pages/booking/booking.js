// Booking page: asks for the reminder (a subscribe message needs the user's tap, wx.requestSubscribeMessage),
// then opens the backend's booking page in a web-view: {apiBase}/h5/advisor/booking.html?token=…
// (the page moves the token to sessionStorage at once). The template id is the bank's, from the WeChat console.
const app = getApp();
const REMINDER_TEMPLATE_ID = 'yt-appointment-reminder';

Page({
  data: { src: '', error: '' },

  onLoad() {
    const open = () => app.ensureLogin().then((token) => {
      this.setData({ src: app.globalData.apiBase + '/h5/advisor/booking.html?token=' + encodeURIComponent(token) });
    }, (err) => this.setData({ error: err.message || '登录失败，请返回重试' }));
    // One grant = one reminder; refusing still lets the customer book (they just get no reminder).
    wx.requestSubscribeMessage({ tmplIds: [REMINDER_TEMPLATE_ID], complete: open });
  },
});
