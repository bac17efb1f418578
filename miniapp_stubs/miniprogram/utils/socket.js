// WebSocket to /miniapp/ws with reconnect (exponential backoff), ping and after_id replay.
//
// createSocket({ buildUrl, onFrame, onStatus }):
//   buildUrl()  → Promise<string>; called before EVERY (re)connect, so the caller can refresh the
//                 token and pass the latest after_id (the server replays what we missed).
//   onFrame(f)  → each parsed server frame except pong.
//   onStatus(s) → 'connecting' | 'open' | 'reconnecting' | 'closed'.
// Returns { start, stop }.
//
// WeChat notes: use the SocketTask callbacks (task.onOpen …), not the global wx.onSocket*;
// at most 5 sockets may be open at once, so a dead task is always dropped before a new one;
// sockets are cut when the mini-program stays in the background, so pages stop() on onHide
// and start() again on onShow.

const PING_MS = 25000;
const MAX_BACKOFF_MS = 30000;

function createSocket(opts) {
  let task = null;
  let stopped = true;
  let attempt = 0;
  let pingTimer = null;
  let retryTimer = null;

  const status = (s) => opts.onStatus && opts.onStatus(s);

  function start() {
    if (!stopped) return;
    stopped = false;
    attempt = 0;
    connect();
  }

  function stop() {
    stopped = true;
    clearTimeout(retryTimer);
    clearInterval(pingTimer);
    const t = task;
    task = null;
    if (t) t.close({ code: 1000 });
    status('closed');
  }

  function connect() {
    status(attempt ? 'reconnecting' : 'connecting');
    Promise.resolve()
      .then(opts.buildUrl)
      .then((url) => {
        if (stopped) return;
        const t = wx.connectSocket({ url, fail: () => dead(t) });
        task = t;
        t.onOpen(() => {
          if (task !== t) return;
          attempt = 0;
          status('open');
          clearInterval(pingTimer);
          pingTimer = setInterval(() => {
            if (task === t) t.send({ data: JSON.stringify({ type: 'ping' }) });
          }, PING_MS);
        });
        t.onMessage((ev) => {
          if (task !== t) return;
          let frame;
          try { frame = JSON.parse(ev.data); } catch (e) { return; }
          if (frame && frame.type !== 'pong') opts.onFrame(frame);
        });
        // WeChat may fire onError, onClose or both for one failure; dead() runs once per task.
        t.onError(() => dead(t));
        t.onClose(() => dead(t));
      })
      .catch(() => scheduleReconnect()); // buildUrl failed (offline, login failed …)
  }

  function dead(t) {
    if (!t || task !== t) return;
    task = null;
    clearInterval(pingTimer);
    try { t.close({}); } catch (e) { /* already closed */ }
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (stopped) return;
    const wait = Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, attempt)) + Math.random() * 500;
    attempt += 1;
    status('reconnecting');
    clearTimeout(retryTimer);
    retryTimer = setTimeout(connect, wait);
  }

  return { start, stop };
}

module.exports = { createSocket };
