/* Echo test page for mod_websocket: plain browser JavaScript, no build step.
 *
 * Log lines (the browser tests read them):
 *   CONNECTED to URL (protocol: "P", extensions: "E")
 *   SENT: text                       | SENT: N bytes binary[ (random)]
 *   RESPONSE: text                   | RESPONSE: N bytes binary, matches | ..., DIFFERS ...
 *   DISCONNECTED (code C, reason "R", clean|not clean)
 *   ERROR: ...
 */
(function () {
  'use strict';

  var MAX_LOG_LINES = 500;
  var MAX_SHOWN_CHARS = 1000;

  var $ = function (id) { return document.getElementById(id); };
  var ui = {
    location: $('location'), protocols: $('protocols'), connect: $('connect'),
    disconnect: $('disconnect'), message: $('message'), binary: $('binary'),
    send: $('send'), blobSize: $('blob-size'), sendBlob: $('send-blob'),
    log: $('log'), clearLog: $('clear-log'), status: $('status')
  };

  var ws = null;
  /* What we sent and have not seen echoed yet, oldest first: an echo server answers in
   * order, so each incoming message is compared with the head of this queue. */
  var pending = [];

  function defaultLocation() {
    var l = window.location;
    if (l.protocol === 'http:' || l.protocol === 'https:') {
      return (l.protocol === 'https:' ? 'wss://' : 'ws://') + l.host +
        l.pathname.replace(/[^\/]*$/, '') + 'echo';   /* beside the page */
    }
    return 'ws://localhost:8080/echo';
  }

  function pad(n, w) { n = String(n); while (n.length < w) n = '0' + n; return n; }

  function log(kind, text) {
    var line = document.createElement('div');
    line.className = 'line ' + kind;
    var d = new Date();
    var ts = document.createElement('span');
    ts.className = 'ts';
    ts.textContent = pad(d.getHours(), 2) + ':' + pad(d.getMinutes(), 2) + ':' +
      pad(d.getSeconds(), 2) + '.' + pad(d.getMilliseconds(), 3);
    var msg = document.createElement('span');
    msg.className = 'msg';
    msg.textContent = text;
    line.appendChild(ts);
    line.appendChild(msg);
    ui.log.appendChild(line);
    while (ui.log.childNodes.length > MAX_LOG_LINES) ui.log.removeChild(ui.log.firstChild);
    ui.log.scrollTop = ui.log.scrollHeight;
  }

  function shorten(s) {
    if (s.length <= MAX_SHOWN_CHARS) return s;
    return s.slice(0, MAX_SHOWN_CHARS) + '… (' + s.length + ' characters)';
  }

  function hexPreview(bytes) {
    var out = [], n = Math.min(bytes.length, 16);
    for (var i = 0; i < n; i++) out.push(pad(bytes[i].toString(16), 2));
    return out.join(' ') + (bytes.length > n ? ' …' : '');
  }

  function setState(state) {
    ui.status.textContent = state;
    ui.status.className = 'status status-' + (state === 'connected' ? 'open' :
      state === 'connecting…' ? 'connecting' : 'closed');
    var open = state === 'connected';
    var idle = state === 'disconnected';
    ui.connect.disabled = !idle;
    ui.location.disabled = !idle;
    ui.protocols.disabled = !idle;
    ui.disconnect.disabled = idle;
    ui.send.disabled = !open;
    ui.sendBlob.disabled = !open;
  }

  function randomBytes(n) {
    var buf = new Uint8Array(n);
    var c = window.crypto || window.msCrypto;
    for (var off = 0; off < n; off += 65536) {   /* getRandomValues takes 64 KiB at most */
      c.getRandomValues(buf.subarray(off, Math.min(n, off + 65536)));
    }
    return buf;
  }

  function firstDifference(a, b) {
    var n = Math.min(a.length, b.length);
    for (var i = 0; i < n; i++) if (a[i] !== b[i]) return i;
    return a.length === b.length ? -1 : n;
  }

  function connect() {
    var url = ui.location.value.trim();
    var protos = ui.protocols.value.split(',').map(function (s) { return s.trim(); })
      .filter(function (s) { return s.length > 0; });
    pending = [];
    try {
      ws = protos.length ? new WebSocket(url, protos) : new WebSocket(url);
    } catch (e) {
      log('error', 'ERROR: ' + e.message);
      ws = null;
      return;
    }
    ws.binaryType = 'arraybuffer';
    setState('connecting…');
    log('info', 'CONNECTING to ' + url + (protos.length ? ' (offering ' + protos.join(', ') + ')' : ''));

    var sock = ws;
    sock.onopen = function () {
      if (sock !== ws) return;
      setState('connected');
      log('open', 'CONNECTED to ' + sock.url + ' (protocol: "' + sock.protocol +
        '", extensions: "' + sock.extensions + '")');
    };
    sock.onmessage = function (ev) { if (sock === ws) onMessage(ev.data); };
    sock.onerror = function () {
      if (sock !== ws) return;
      /* Browsers give no detail here on purpose; the close event that follows has the code. */
      log('error', 'ERROR: the WebSocket connection reported an error');
    };
    sock.onclose = function (ev) {
      if (sock !== ws) return;
      log('close', 'DISCONNECTED (code ' + ev.code + ', reason "' + ev.reason + '", ' +
        (ev.wasClean ? 'clean' : 'not clean') + ')');
      if (pending.length) log('error', 'ERROR: ' + pending.length + ' sent message(s) were never echoed');
      ws = null;
      pending = [];
      setState('disconnected');
    };
  }

  function onMessage(data) {
    var expect = pending.shift();
    if (typeof data === 'string') {
      var note = '';
      if (expect && expect.kind === 'text' && expect.text !== data) note = '  [DIFFERS from what was sent]';
      else if (expect && expect.kind !== 'text') note = '  [expected a binary message]';
      log(note ? 'error' : 'response', 'RESPONSE: ' + shorten(data) + note);
      return;
    }
    var got = new Uint8Array(data);
    var text = got.length + ' bytes binary';
    if (expect && expect.kind === 'binary') {
      var at = firstDifference(expect.bytes, got);
      var ms = Math.round(performance.now() - expect.t0);
      if (at < 0) {
        log('response', 'RESPONSE: ' + text + ', matches (' + ms + ' ms round trip)' +
          (expect.random ? '' : ': ' + hexPreview(got)));
      } else {
        log('error', 'RESPONSE: ' + text + ', DIFFERS from the ' + expect.bytes.length +
          ' bytes sent, first at byte ' + at);
      }
    } else {
      log(expect ? 'error' : 'response', 'RESPONSE: ' + text + ': ' + hexPreview(got) +
        (expect ? '  [expected a text message]' : ''));
    }
  }

  function sendMessage() {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    var text = ui.message.value;
    if (ui.binary.checked) {
      var bytes = new TextEncoder().encode(text);
      pending.push({ kind: 'binary', bytes: bytes, t0: performance.now(), random: false });
      ws.send(bytes);
      log('sent', 'SENT: ' + bytes.length + ' bytes binary: ' + hexPreview(bytes));
    } else {
      pending.push({ kind: 'text', text: text });
      ws.send(text);
      log('sent', 'SENT: ' + shorten(text));
    }
  }

  function sendBlob() {
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    var n = parseInt(ui.blobSize.value, 10);
    if (!(n >= 0) || n > 256 * 1024 * 1024) {
      log('error', 'ERROR: random size must be 0 .. 268435456 bytes');
      return;
    }
    var bytes = randomBytes(n);
    pending.push({ kind: 'binary', bytes: bytes, t0: performance.now(), random: true });
    ws.send(bytes);
    log('sent', 'SENT: ' + n + ' bytes binary (random)');
  }

  ui.location.value = defaultLocation();
  ui.connect.addEventListener('click', connect);
  ui.disconnect.addEventListener('click', function () {
    if (!ws) return;
    if (ws.readyState === WebSocket.CONNECTING || ws.readyState === WebSocket.OPEN) {
      setState('closing…');
      log('info', 'CLOSING (code 1000)');
      ws.close(1000);
    }
  });
  ui.send.addEventListener('click', sendMessage);
  ui.sendBlob.addEventListener('click', sendBlob);
  ui.message.addEventListener('keydown', function (e) {
    if (e.key === 'Enter' && !e.shiftKey) { e.preventDefault(); sendMessage(); }
  });
  ui.location.addEventListener('keydown', function (e) {
    if (e.key === 'Enter' && !ui.connect.disabled) connect();
  });
  ui.clearLog.addEventListener('click', function () { ui.log.textContent = ''; });
  setState('disconnected');
}());
