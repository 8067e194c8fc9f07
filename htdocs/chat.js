/* Chat page for mod_websocket's chat plugin: plain browser JavaScript, no build step.
 *
 * Connects to ws(s)://HOST/DIR/chat/ROOM?name=NICK, DIR being the page's directory (the
 * scheme follows the page's).  The server sends JSON objects {"type","from","text","ts"};
 * each becomes one line of #messages, <div class="chat-line chat-TYPE"> with .ts (server
 * time), .from and .text spans (the browser tests read them).  Types: welcome (to us: our
 * name and room), join, leave, nick (from: old name, text: new), message, error (to us
 * only); the page adds "system" lines of its own (disconnected).
 */
(function () {
  'use strict';

  var MAX_LINES = 500;
  var ROOM_RE = /^[A-Za-z0-9_-]{1,32}$/;

  var $ = function (id) { return document.getElementById(id); };
  var ui = {
    room: $('room'), nickname: $('nickname'), setName: $('set-name'), endpoint: $('endpoint'),
    connect: $('connect'), disconnect: $('disconnect'), status: $('status'),
    roomName: $('room-name'), me: $('me'), messages: $('messages'), text: $('text'),
    send: $('send')
  };

  var ws = null;
  var myName = null;

  function endpoint(room, name) {
    var l = window.location;
    var base = (l.protocol === 'https:' ? 'wss://' : 'ws://') +
      (l.protocol === 'http:' || l.protocol === 'https:' ? l.host : 'localhost:8080');
    var dir = l.protocol === 'http:' || l.protocol === 'https:' ?
      l.pathname.replace(/[^\/]*$/, '') : '/';   /* the endpoint is beside the page */
    return base + dir + 'chat/' + room + (name ? '?name=' + encodeURIComponent(name) : '');
  }

  function pad(n) { return (n < 10 ? '0' : '') + n; }
  function clock(ms) {
    var d = new Date(ms);
    return pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }

  /* One line; textContent only, so nothing a user typed is ever parsed as HTML. */
  function line(type, from, text, ts) {
    var div = document.createElement('div');
    div.className = 'chat-line chat-' + type + (type === 'message' && from === myName ? ' mine' : '');
    div.dataset.type = type;
    var t = document.createElement('span');
    t.className = 'ts';
    t.textContent = clock(ts || Date.now());
    var f = document.createElement('span');
    f.className = 'from';
    f.textContent = from === null || from === undefined ? '' : from;
    var m = document.createElement('span');
    m.className = 'text';
    m.textContent = text;
    div.appendChild(t);
    div.appendChild(f);
    div.appendChild(m);
    var atBottom = ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 40;
    ui.messages.appendChild(div);
    while (ui.messages.childNodes.length > MAX_LINES) ui.messages.removeChild(ui.messages.firstChild);
    if (atBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function setState(state) {
    ui.status.textContent = state;
    ui.status.className = 'status status-' + (state === 'connected' ? 'open' :
      state === 'connecting…' ? 'connecting' : 'closed');
    var open = state === 'connected', idle = state === 'disconnected';
    ui.connect.disabled = !idle;
    ui.room.disabled = !idle;
    ui.disconnect.disabled = idle;
    ui.text.disabled = !open;
    ui.send.disabled = !open;
    ui.setName.disabled = !open;
  }

  function onMessage(data) {
    var msg;
    try {
      msg = JSON.parse(data);
    } catch (e) {
      line('error', null, 'unreadable message from the server: ' + String(data).slice(0, 200));
      return;
    }
    switch (msg.type) {
      case 'welcome':
        myName = msg.from;
        ui.me.textContent = myName;
        ui.roomName.textContent = msg.text;
        if (!ui.nickname.value) ui.nickname.placeholder = myName;
        return;   /* our own join notice follows */
      case 'join':
        line('join', msg.from, 'joined ' + msg.text, msg.ts);
        return;
      case 'leave':
        line('leave', msg.from, 'left ' + msg.text, msg.ts);
        return;
      case 'nick':
        if (msg.from === myName) {
          myName = msg.text;
          ui.me.textContent = myName;
        }
        line('nick', msg.from, 'is now known as ' + msg.text, msg.ts);
        return;
      case 'message':
        line('message', msg.from, msg.text, msg.ts);
        return;
      case 'error':
        line('error', null, msg.text, msg.ts);
        return;
      default:
        line('error', null, 'unknown message type ' + msg.type);
    }
  }

  function connect() {
    var room = ui.room.value.trim() || 'lobby';
    var name = ui.nickname.value.trim();
    if (!ROOM_RE.test(room)) {
      line('error', null, 'a room name is 1-32 letters, digits, _ or -');
      return;
    }
    var url = endpoint(room, name);
    ui.endpoint.textContent = url;
    myName = null;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      line('error', null, e.message);
      return;
    }
    setState('connecting…');
    var sock = ws;
    sock.onopen = function () { if (sock === ws) setState('connected'); };
    sock.onmessage = function (ev) { if (sock === ws) onMessage(ev.data); };
    sock.onclose = function (ev) {
      if (sock !== ws) return;
      line('system', null, 'disconnected (code ' + ev.code + (ev.reason ? ', ' + ev.reason : '') + ')');
      ws = null;
      myName = null;
      ui.me.textContent = '–';
      setState('disconnected');
    };
  }

  function send() {
    var text = ui.text.value;
    if (!ws || ws.readyState !== WebSocket.OPEN || !text) return;
    ws.send(text);
    ui.text.value = '';
    ui.text.focus();
  }

  function setName() {
    var name = ui.nickname.value.trim();
    if (ws && ws.readyState === WebSocket.OPEN && name && name !== myName) ws.send('name: ' + name);
  }

  ui.connect.addEventListener('click', connect);
  ui.disconnect.addEventListener('click', function () { if (ws) ws.close(1000); });
  ui.send.addEventListener('click', send);
  ui.setName.addEventListener('click', setName);
  ui.text.addEventListener('keydown', function (e) { if (e.key === 'Enter') { e.preventDefault(); send(); } });
  ui.nickname.addEventListener('keydown', function (e) {
    if (e.key !== 'Enter') return;
    if (ws) setName(); else connect();
  });
  ui.room.addEventListener('keydown', function (e) { if (e.key === 'Enter' && !ws) connect(); });
  ui.endpoint.textContent = endpoint(ui.room.value, '');
  setState('disconnected');
}());
