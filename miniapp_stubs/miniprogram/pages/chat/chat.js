// Chat page: transcript, text input, 转人工 and 视频客服 buttons, conversation state line.
const api = require('../../utils/api.js');
const { createSocket } = require('../../utils/socket.js');

const app = getApp();

const LABELS = { bot: '智能客服', agent: '人工客服', system: '系统' };
const STATES = {
  bot: '智能客服为您服务',
  queued: '排队中，请稍候…',
  with_agent: '人工客服已接入',
  closed: '本次服务已结束',
};

const CARD_LABELS = { booking_invite: '预约客户经理', document_request: '上传资料', guide: '打开操作指导' };

// Server message → view model (WXML has no expressions for lookups, so precompute).
function view(m) {
  return {
    key: 'm' + m.id, // scroll-into-view ids must not start with a digit
    id: m.id,
    sender: m.sender_kind,
    side: m.sender_kind === 'customer' ? 'right' : 'left',
    label: LABELS[m.sender_kind] || '',
    // The bot's one-tap video invitation (video scenarios): a button that opens the video page.
    videoInvite: !!(m.payload && m.payload.type === 'video_invite'),
    // Advisor cards (docs/advisor.md): a booking link, a document request, a guide naming a page to open.
    cardPath: m.payload && CARD_LABELS[m.payload.type] ? '/' + m.payload.miniapp_path : '',
    cardLabel: m.payload ? CARD_LABELS[m.payload.type] || '' : '',
    text: m.text,
  };
}

// Server messages by id; pending (not yet confirmed) messages stay at the end.
function order(a, b) {
  return (a.pending ? Infinity : a.id) - (b.pending ? Infinity : b.id) || 0;
}

Page({
  data: {
    messages: [],
    state: 'bot',
    stateText: STATES.bot,
    online: false,
    input: '',
    error: '',
    scrollTo: '',
  },

  onLoad() {
    this.seen = {}; // message ids already shown: replies come both in the POST answer and on the socket
    this.lastId = 0;
    this.conversation = null;
    this.socket = createSocket({
      buildUrl: () => this.syncThenUrl(),
      onFrame: (f) => this.onFrame(f),
      onStatus: (s) => this.setData({ online: s === 'open' }),
    });
  },

  // Also runs when coming back from the video page or from the background.
  onShow() { this.socket.start(); },
  onHide() { this.socket.stop(); },
  onUnload() { this.socket.stop(); },

  // Before each (re)connect: fetch what we missed over HTTP (this also logs in again on 401),
  // then open the socket with a fresh single-use ticket and the last id we have.
  syncThenUrl() {
    return api.getMessages(this.lastId).then((data) => {
      this.showWaiting(data);
      this.setConversation(data.conversation);
      this.addMessages(data.messages);
      return api.mintTicket('socket');
    }).then((r) => {
      const base = app.globalData.apiBase.replace(/^http/, 'ws');
      return base + '/miniapp/ws?ticket=' + encodeURIComponent(r.ticket) + '&after_id=' + this.lastId;
    }, (err) => {
      if (err.code !== 'network') this.showError(err);
      throw err;
    });
  },

  // Replies written while the customer was away (any conversation) are shown first.
  showWaiting(data) {
    if (data && data.waiting && data.waiting.length) this.addMessages(data.waiting);
  },

  onFrame(frame) {
    if (frame.type === 'message') this.addMessages([frame.message]);
    else if (frame.type === 'conversation') this.setConversation(frame.conversation);
  },

  setConversation(c) {
    this.conversation = c || null;
    const state = (c && c.state) || 'bot';
    this.setData({ state, stateText: STATES[state] || STATES.bot });
  },

  addMessages(list) {
    let messages = this.data.messages;
    (list || []).forEach((m) => {
      if (!m || this.seen[m.id]) return;
      this.seen[m.id] = true;
      if (m.id > this.lastId) this.lastId = m.id;
      if (m.sender_kind === 'customer') {
        // our own message echoed on the socket before the POST answered: drop its pending copy
        const i = messages.findIndex((p) => p.pending && p.text === m.text);
        if (i >= 0) messages = messages.slice(0, i).concat(messages.slice(i + 1));
      }
      messages = messages.concat([view(m)]);
    });
    if (messages === this.data.messages) return;
    messages.sort(order);
    this.setData({ messages, scrollTo: messages.length ? messages[messages.length - 1].key : '' });
    // The page is showing them: the agent sees 已读 next to each reply (api/delivery).
    const shown = (list || []).filter((m) => m && m.sender_kind === 'agent').map((m) => m.id);
    if (shown.length) api.request('POST', '/miniapp/receipts', { status: 'read', message_ids: shown }).catch(() => {});
  },

  // 「回复通知」: one tap on 允许 lets the bank send one subscribe message when an agent replies while the
  // customer is away; the answer is told to the backend, which spends it only then.
  onAllowNotice() {
    const tmpl = app.globalData.replyTemplateId;
    wx.requestSubscribeMessage({
      tmplIds: [tmpl],
      success: (res) => {
        const results = {};
        results[tmpl] = res[tmpl];
        api.request('POST', '/miniapp/subscriptions', { results }).catch((err) => this.showError(err));
      },
    });
  },

  setPending(clientMsgId, text, failed) {
    const item = { key: 'p' + clientMsgId, pending: true, failed, clientMsgId, text, sender: 'customer', side: 'right', label: '' };
    const rest = this.data.messages.filter((p) => p.clientMsgId !== clientMsgId);
    this.setData({ messages: rest.concat([item]), scrollTo: item.key });
  },

  dropPending(clientMsgId) {
    this.setData({ messages: this.data.messages.filter((p) => p.clientMsgId !== clientMsgId) });
  },

  // Send text; on a retry the same client_msg_id is reused so the backend processes it once.
  sendText(text, clientMsgId) {
    const id = clientMsgId || api.uuid();
    this.setPending(id, text, false);
    api.sendMessage(text, id).then((res) => {
      this.dropPending(id);
      this.addMessages([res.message].concat(res.replies || []));
      this.setConversation(res.conversation);
      this.setData({ error: '' });
    }, (err) => {
      // if the socket already echoed it, the server has it: nothing to retry
      if (!this.data.messages.some((p) => p.clientMsgId === id)) return;
      this.setPending(id, text, true);
      this.showError(err);
    });
  },

  onInput(e) { this.setData({ input: e.detail.value }); },

  // Bound to both the 发送 button (tap) and the keyboard's send key (confirm).
  onSend(e) {
    const typed = e && e.detail && typeof e.detail.value === 'string' ? e.detail.value : this.data.input;
    const text = (typed || '').trim();
    if (!text) return;
    this.setData({ input: '' });
    this.sendText(text);
  },

  onToHuman() { this.sendText('转人工'); },

  onCard(e) { wx.navigateTo({ url: e.currentTarget.dataset.path }); },

  onBooking() { wx.navigateTo({ url: '/pages/booking/booking' }); },

  onVideo() {
    const cid = this.conversation ? this.conversation.id : '';
    wx.navigateTo({ url: '/pages/video/video?conversation_id=' + encodeURIComponent(cid) });
  },

  // Tapping a failed bubble sends it again.
  onRetry(e) {
    const cid = e.currentTarget.dataset.cid;
    const p = this.data.messages.find((m) => m.clientMsgId === cid);
    if (p && p.failed) this.sendText(p.text, cid);
  },

  showError(err) { this.setData({ error: (err && err.message) || '出错了，请稍后再试' }); },
  clearError() { this.setData({ error: '' }); },
});
