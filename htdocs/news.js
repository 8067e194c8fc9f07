/* The live news page (news.html): headlines from the "news" channel, newest first.
 *
 * Subscribes to sub/news beside the page with channel.js (MwsChannel): WebSocket, else
 * EventSource, else long-polling; ?transport=websocket|eventsource|longpoll forces one,
 * ?last_event_id=E-S starts after that id (a bookmark: older ones are not shown again).
 * A message is JSON {"headline", "source", "time"} (time: ISO 8601, or seconds or
 * milliseconds since the epoch) or plain text (source "unknown", time of arrival).
 *
 * The page, for readers and the browser tests: #transport (data-transport = the
 * transport in use), #status (live / connecting… / reconnecting… / ended),
 * #count, #reconnects, #lost; each headline is <li class="headline" data-id="E-S">
 * with <time>, .text and .source; a gap is <li class="news-gap">.
 */
(function () {
  'use strict';

  var KEEP = 200;                      /* headlines shown */
  var NAMES = { websocket: 'WebSocket', eventsource: 'EventSource', longpoll: 'long-poll' };

  var $ = function (id) { return document.getElementById(id); };
  var ui = { status: $('status'), transport: $('transport'), url: $('channel-url'),
             count: $('count'), reconnects: $('reconnects'), lost: $('lost'),
             list: $('headlines'), empty: $('empty') };
  var count = 0, lost = 0;

  function pad(n) { return (n < 10 ? '0' : '') + n; }

  function parseTime(t) {
    if (typeof t === 'number' && isFinite(t)) return new Date(t < 1e12 ? t * 1000 : t);
    if (typeof t === 'string' && t) {
      var d = new Date(/^\d+(\.\d+)?$/.test(t) ? Number(t) * (Number(t) < 1e12 ? 1000 : 1) : t);
      if (!isNaN(d.getTime())) return d;
    }
    return null;
  }

  /* A message's data -> {headline, source, time (Date)}. */
  function headline(data) {
    var now = new Date();
    if (typeof data !== 'string') {
      return { headline: '(' + data.length + ' bytes of binary data)', source: 'unknown', time: now };
    }
    var m = null;
    try { m = JSON.parse(data); } catch (e) { /* plain text */ }
    if (m && typeof m === 'object' && typeof m.headline === 'string') {
      return { headline: m.headline, source: typeof m.source === 'string' && m.source ? m.source : 'unknown',
               time: parseTime(m.time) || now };
    }
    return { headline: data, source: 'unknown', time: now };
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  function prepend(li) {
    ui.list.insertBefore(li, ui.list.firstChild);
    while (ui.list.children.length > KEEP) ui.list.removeChild(ui.list.lastChild);
    ui.empty.hidden = true;
  }

  function show(msg) {
    var h = headline(msg.data);
    var li = el('li', 'headline');
    li.dataset.id = msg.id || '';
    var t = el('time', null, pad(h.time.getHours()) + ':' + pad(h.time.getMinutes()) + ':' +
               pad(h.time.getSeconds()));
    t.dateTime = h.time.toISOString();
    li.appendChild(t);
    li.appendChild(el('span', 'text', h.headline));
    li.appendChild(el('span', 'source', h.source));
    prepend(li);
    ui.count.textContent = String(++count);
  }

  var LABELS = { connecting: ['connecting…', 'connecting'], open: ['live', 'open'],
                 retrying: ['reconnecting…', 'connecting'], ended: ['ended', 'closed'],
                 closed: ['offline', 'closed'] };

  function status(s) {
    ui.transport.textContent = NAMES[s.transport] + (forced ? ' (forced)' : '');
    ui.transport.dataset.transport = s.transport;
    ui.reconnects.textContent = String(s.reconnects);
    if (s.state === 'lost') {
      ui.lost.textContent = String(++lost);
      prepend(el('li', 'news-gap', 'Some headlines were missed here (the server no longer had them).'));
      return;
    }
    var l = LABELS[s.state] || [s.state, 'closed'];
    ui.status.textContent = l[0];
    ui.status.className = 'status status-' + l[1];
    ui.status.dataset.state = s.state;
  }

  var query = new URLSearchParams(window.location.search);
  var want = query.get('transport') || 'auto';
  var forced = want !== 'auto';
  var url = new URL('sub/news', window.location.href).toString();
  ui.url.textContent = new URL(url).pathname;
  window.newsChannel = new MwsChannel(url, { transport: want, onmessage: show, onstatus: status,
                                              lastEventId: query.get('last_event_id') });
}());
