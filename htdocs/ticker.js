/* Ticker page for mod_websocket's ticker plugin: plain browser JavaScript, no build step.
 *
 * Connects on load to ws(s)://HOST/DIR/ticker, beside the page (the scheme follows the
 * page's).  Each message:
 *   {"ts": microseconds since the epoch (server send time), "tick", "interval_ms",
 *    "quotes": [{"symbol","price","change","pct","decimals","bid","ask"}, ...]}
 * Table rows are <tr id="row-SYMBOL"> with .price, .change and .pct cells; .change and
 * .pct are class "up" or "down" by the sign of the change, and .price flashes
 * "flash-up" / "flash-down" when it moves.  #updates counts messages, #delay shows the
 * last delivery delay (now - ts) in ms (the browser tests read them).
 * ?transport=websocket|eventsource|longpoll: the same board from the ticker's channel at
 * sub/ticker beside the page (channel.js; each message's data is the ticker's JSON), e.g.
 * where a proxy lets no WebSocket through.  #via names the path taken.
 * The currency board: a <tr id="fx-SYMBOL"> per currency pair (six capitals, shown as
 * EUR/USD) with .bid, .ask (flashing like .price) and .spread cells.
 */
(function () {
  'use strict';

  var DELAYS_KEPT = 100;

  var $ = function (id) { return document.getElementById(id); };
  var ui = {
    location: $('location'), connect: $('connect'), disconnect: $('disconnect'),
    status: $('status'), rows: $('quote-rows'), updates: $('updates'),
    lastUpdate: $('last-update'), delay: $('delay'), delayStats: $('delay-stats'),
    interval: $('interval'), fxRows: $('fx-rows'), via: $('via')
  };

  var ws = null;
  var chan = null;      /* channel mode: {ch: MwsChannel} */
  var via = new URLSearchParams(window.location.search).get('transport');
  var VIA = { websocket: 'WebSocket', eventsource: 'EventSource', longpoll: 'long-poll' };
  var updates = 0;
  var delays = [];
  var last = {};        /* symbol -> last price, to flash a move */
  var lastFx = {};      /* symbol -> {bid, ask} */

  function defaultLocation() {
    var l = window.location;
    if (via) return new URL('sub/ticker', l.href).toString();
    if (l.protocol === 'http:' || l.protocol === 'https:') {
      return (l.protocol === 'https:' ? 'wss://' : 'ws://') + l.host +
        l.pathname.replace(/[^\/]*$/, '') + 'ticker';   /* beside the page */
    }
    return 'ws://localhost:8080/ticker';
  }

  function pad(n, w) { n = String(n); while (n.length < (w || 2)) n = '0' + n; return n; }

  function setState(state) {
    ui.status.textContent = state;
    ui.status.className = 'status status-' + (state === 'connected' ? 'open' :
      state === 'connecting…' ? 'connecting' : 'closed');
    var idle = state === 'disconnected';
    ui.connect.disabled = !idle;
    ui.location.disabled = !idle;
    ui.disconnect.disabled = idle;
  }

  function signClass(x) { return x > 0 ? 'up' : x < 0 ? 'down' : 'flat'; }
  function signed(x, d) { return (x > 0 ? '+' : '') + x.toFixed(d); }

  /* The table row with this id (made on first use: a th, then a td per cell class). */
  function tableRow(tbody, id, label, cells) {
    var tr = document.getElementById(id);
    if (tr) return tr;
    tr = document.createElement('tr');
    tr.id = id;
    cells.forEach(function (k, i) {
      var td = document.createElement(i ? 'td' : 'th');
      td.className = k;
      tr.appendChild(td);
    });
    tr.cells[0].textContent = label;
    tbody.appendChild(tr);
    return tr;
  }

  function row(symbol) {
    return tableRow(ui.rows, 'row-' + symbol, symbol, ['symbol', 'price', 'change', 'pct']);
  }

  /* Restart the flash animation: remove the class, force a style flush, add it back. */
  function flash(el, cls) {
    el.classList.remove('flash-up', 'flash-down');
    void el.offsetWidth;
    el.classList.add(cls);
  }

  function render(q) {
    var tr = row(q.symbol);
    var d = q.decimals;
    var price = tr.querySelector('.price'), change = tr.querySelector('.change'),
      pct = tr.querySelector('.pct');
    price.textContent = q.price.toFixed(d);
    change.textContent = signed(q.change, d);
    pct.textContent = signed(q.pct, 2) + '%';
    change.className = 'change ' + signClass(q.change);
    pct.className = 'pct ' + signClass(q.pct);
    if (q.symbol in last && last[q.symbol] !== q.price) {
      flash(price, q.price > last[q.symbol] ? 'flash-up' : 'flash-down');
    }
    last[q.symbol] = q.price;
    if (/^[A-Z]{6}$/.test(q.symbol) && typeof q.bid === 'number') renderFx(q);
  }

  /* A currency pair on the board: bid, ask, spread (pips for 4+ decimals or yen). */
  function renderFx(q) {
    var pair = q.symbol.slice(0, 3) + '/' + q.symbol.slice(3);
    var tr = tableRow(ui.fxRows, 'fx-' + q.symbol, pair, ['pair', 'bid', 'ask', 'spread']);
    var d = q.decimals, prev = lastFx[q.symbol];
    var pip = q.symbol.slice(3) === 'JPY' ? 0.01 : d >= 4 ? 0.0001 : 0;
    var spread = q.ask - q.bid;
    ['bid', 'ask'].forEach(function (k) {
      var td = tr.querySelector('.' + k);
      td.textContent = q[k].toFixed(d);
      if (prev && prev[k] !== q[k]) flash(td, q[k] > prev[k] ? 'flash-up' : 'flash-down');
    });
    tr.querySelector('.spread').textContent = pip ? (spread / pip).toFixed(1) + ' pips' : spread.toFixed(d);
    lastFx[q.symbol] = { bid: q.bid, ask: q.ask };
  }

  function onMessage(data) {
    var now = Date.now();
    var msg = JSON.parse(data);
    var delay = now - msg.ts / 1000;
    msg.quotes.forEach(render);
    updates++;
    delays.push(delay);
    if (delays.length > DELAYS_KEPT) delays.shift();
    var sorted = delays.slice().sort(function (a, b) { return a - b; });
    var d = new Date(msg.ts / 1000);
    ui.updates.textContent = String(updates);
    ui.lastUpdate.textContent = pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' +
      pad(d.getSeconds()) + '.' + pad(d.getMilliseconds(), 3);
    ui.delay.textContent = delay.toFixed(1) + ' ms';
    ui.delayStats.textContent = sorted[Math.floor(sorted.length / 2)].toFixed(1) + ' / ' +
      sorted[sorted.length - 1].toFixed(1) + ' ms';
    ui.interval.textContent = msg.interval_ms + ' ms';
  }

  /* The board from the ticker's channel by channel.js (the transport forced by ?transport). */
  function connectChannel(url) {
    var token = {};
    chan = token;
    setState('connecting…');
    token.ch = new MwsChannel(url, {
      transport: via,
      onmessage: function (m) { if (chan === token) onMessage(m.data); },
      onstatus: function (s) {
        if (chan !== token) return;
        ui.via.textContent = 'channel ' + new URL(url).pathname + ' over ' + (VIA[s.transport] || s.transport);
        if (s.state === 'open') setState('connected');
        else if (s.state === 'closed' || s.state === 'ended') { chan = null; setState('disconnected'); }
        else if (s.state !== 'lost') setState('connecting…');
      }
    });
  }

  function connect() {
    var url = ui.location.value.trim();
    if (via) {
      try { connectChannel(url); } catch (e) { chan = null; setState('disconnected'); ui.status.textContent = e.message; }
      return;
    }
    ui.via.textContent = 'the ticker plugin\'s WebSocket';
    try {
      ws = new WebSocket(url);
    } catch (e) {
      ui.status.textContent = e.message;
      return;
    }
    setState('connecting…');
    var sock = ws;
    sock.onopen = function () { if (sock === ws) setState('connected'); };
    sock.onmessage = function (ev) { if (sock === ws) onMessage(ev.data); };
    sock.onclose = function () {
      if (sock !== ws) return;
      ws = null;
      setState('disconnected');
    };
  }

  ui.location.value = defaultLocation();
  ui.connect.addEventListener('click', connect);
  ui.disconnect.addEventListener('click', function () {
    if (chan) chan.ch.close();
    else if (ws) ws.close(1000);
  });
  ui.location.addEventListener('keydown', function (e) {
    if (e.key === 'Enter' && !ui.connect.disabled) connect();
  });
  setState('disconnected');
  connect();    /* a live board: start at once */
}());
