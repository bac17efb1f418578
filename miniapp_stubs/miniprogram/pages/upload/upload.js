// Upload page (a document request card, or 发资料): choose a photo (camera or album) or a PDF from a chat, then
// wx.uploadFile to POST /miniapp/documents (multipart "file", "client_msg_id", optional "request_id").
// The backend checks the type by content and the size (413/422 come back with a message to show).
const app = getApp();
const api = require('../../utils/api.js');

Page({
  data: { what: '发送照片或 PDF 文件', requestId: '', sending: false, result: '', error: '' },

  onLoad(query) {
    const requestId = query.request_id || '';
    this.setData({ requestId });
    if (requestId) {
      api.request('GET', '/miniapp/document-requests/' + requestId).then(
        (r) => this.setData({ what: '请上传：' + r.what }), (e) => this.setData({ error: e.message }));
    }
  },

  onPhoto() {
    wx.chooseMedia({ count: 1, mediaType: ['image'], sizeType: ['compressed'],
      success: (res) => this.upload(res.tempFiles[0].tempFilePath) });
  },

  onPdf() {
    wx.chooseMessageFile({ count: 1, type: 'file', extension: ['pdf'],
      success: (res) => this.upload(res.tempFiles[0].path) });
  },

  upload(filePath) {
    this.setData({ sending: true, error: '', result: '' });
    app.ensureLogin().then((token) => {
      const formData = { client_msg_id: api.uuid().replace(/-/g, '') };
      if (this.data.requestId) formData.request_id = this.data.requestId;
      wx.uploadFile({
        url: app.globalData.apiBase + '/miniapp/documents',
        filePath,
        name: 'file',
        formData,
        header: { Authorization: 'Bearer ' + token },
        success: (res) => {
          let body = {};
          try { body = JSON.parse(res.data); } catch (e) { /* not JSON */ }
          if (res.statusCode === 200) this.setData({ result: '已发送，客户经理会尽快查看。' });
          else this.setData({ error: (body.error && body.error.message) || '发送失败（' + res.statusCode + '）' });
        },
        fail: () => this.setData({ error: '网络连接失败，请稍后再试' }),
        complete: () => this.setData({ sending: false }),
      });
    }, (e) => this.setData({ error: e.message, sending: false }));
  },
});
