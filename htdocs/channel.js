/* channel.js: subscribe to a mod_websocket channel from a page (plain JavaScript, no build
 * step).  docs/channels-client.md explains its use; the wire protocol is in docs/channels.md.
 *
 *   var ch = new MwsChannel('/sub/news', {
 *     transport: 'auto',               // or 'websocket', 'eventsource', 'longpoll'
 *     onmessage: function (m) { ... }, // {id, channel, data, binary, transport}
 *     onstatus: function (s) { ... }   // {state, transport, attempt, delay, id, reconnects}
 *   });
 *   ch.close();
 *
 * 'auto' tries WebSocket, then EventSource, then long-polling, and keeps the first one
 * that connects.  A dropped connection is retried after an exponential backoff with
 * jitter; every reconnect resumes after the last id seen (WebSocket and long-poll: the
 * last_event_id query argument; EventSource: its own Last-Event-ID header, or
 * last_event_id on a fresh EventSource).  Ids are "EPOCH-SEQ": within an epoch a message
 * whose SEQ is not above the last one shown is dropped, so none is shown twice.  When
 * the server says messages were lost (a restart, or history too short), onstatus gets
 * state 'lost'.
 *
 * States: 'connecting', 'open', 'retrying' (with delay, ms), 'lost', 'ended' (the channel
 * was deleted on the server), 'closed' (ch.close()).
 */
(function (global) {
  'use strict';

  var ORDER = ['websocket', 'eventsource', 'longpoll'];
  var noop = function () {};

  /* "EPOCH-SEQ" -> [epoch, seq] (strings of digits; compared as numbers), or null. */
  function parseId(id) {
    var m = /^(\d+)-(\d+)$/.exec(String(id || ''));
    return m ? [m[1], m[2]] : null;
  }

  /* Compare decimal strings without losing precision past 2^53. */
  function cmpDec(a, b) {
    a = a.replace(/^0+(?=\d)/, ''); b = b.replace(/^0+(?=\d)/, '');
    if (a.length !== b.length) return a.length < b.length ? -1 : 1;
    return a < b ? -1 : a > b ? 1 : 0;
  }

  /* Is id after last?  A different epoch (the server's counter restarted) counts as new. */
  function isNewer(id, last) {
    var a = parseId(id), b = parseId(last);
    if (!a || !b) return true;
    if (a[0] !== b[0]) return true;
    return cmpDec(a[1], b[1]) > 0;
  }

  function base64Bytes(s) {
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function withQuery(url, key, value) {
    var u = new URL(url);
    if (value == null) u.searchParams.delete(key); else u.searchParams.set(key, value);
    return u.toString();
  }

  function MwsChannel(url, opts) {
    if (!(this instanceof MwsChannel)) return new MwsChannel(url, opts);
    opts = opts || {};
    var want = opts.transport || 'auto';
    if (want !== 'auto' && ORDER.indexOf(want) < 0) {
      throw new Error('MwsChannel: unknown transport ' + want);
    }
    this.url = new URL(url, global.location.href).toString();
    this.forced = want !== 'auto';
    this.transport = this.forced ? want : ORDER[0];
    this.locked = this.forced;        /* auto: set once a transport has connected */
    this.lastId = parseId(opts.lastEventId) ? String(opts.lastEventId) : null;   /* else: none */
    this.onmessage = opts.onmessage || noop;
    this.onstatus = opts.onstatus || noop;
    this.minDelay = opts.minDelay || 500;
    this.maxDelay = opts.maxDelay || 15000;
    this.openTimeout = opts.openTimeout || 10000;
    this.attempt = 0;                 /* failures since the last good connection */
    this.reconnects = 0;
    this.state = null;
    this.closed = false;
    this.gen = 0;                     /* bumps per connection: stale callbacks ignore */
    this.timer = null;
    this.conn = null;
    /* Channel names, for EventSource's named events (several channels on one URL). */
    var seg = new URL(this.url).pathname.split('/').pop() || '';
    this.channels = opts.channels || decodeURIComponent(seg).split(',').filter(Boolean);
    this._connect();
  }

  MwsChannel.parseId = parseId;
  MwsChannel.isNewer = isNewer;

  MwsChannel.prototype._status = function (state, extra) {
    if (state !== 'lost') this.state = state;      /* lost is an event, not a state */
    var s = { state: state, transport: this.transport, attempt: this.attempt,
              reconnects: this.reconnects, lastId: this.lastId };
    for (var k in extra || {}) s[k] = extra[k];
    this.onstatus(s);
  };

  /* One message from any transport: drop what was shown already, remember the id. */
  MwsChannel.prototype._deliver = function (id, channel, data, binary) {
    if (id && this.lastId && !isNewer(id, this.lastId)) return;
    if (id) this.lastId = id;
    this.onmessage({ id: id, channel: channel, data: binary ? base64Bytes(data) : data,
                     binary: !!binary, transport: this.transport });
  };

  /* Messages were lost between the resume point and what follows.  Forget the resume
   * point: what follows is the first that can be had (reconnecting with the stale one
   * would be told "lost" again). */
  MwsChannel.prototype._lost = function (id) {
    this.lastId = null;
    this._status('lost', { id: id });
  };

  MwsChannel.prototype._opened = function () {
    if (this.everOpened) this.reconnects++;
    this.everOpened = true;
    this.attempt = 0;
    if (!this.forced) this.locked = true;
    this._status('open');
  };

  /* The connection ended.  opened: it had worked (then retry the same transport);
   * otherwise, in auto mode before any transport worked, move to the next one. */
  MwsChannel.prototype._failed = function (opened) {
    if (this.closed) return;
    this.conn = null;
    if (!opened && !this.locked) {
      var i = ORDER.indexOf(this.transport);
      this.transport = ORDER[(i + 1) % ORDER.length];
      if (i + 1 < ORDER.length) {       /* the next transport at once */
        this._connect();
        return;
      }
    }
    var cap = Math.min(this.maxDelay, this.minDelay * Math.pow(2, this.attempt));
    var delay = Math.round(cap / 2 + Math.random() * cap / 2);   /* "equal jitter" */
    this.attempt++;
    var self = this;
    this._status('retrying', { delay: delay });
    this.timer = setTimeout(function () { self.timer = null; self._connect(); }, delay);
  };

  MwsChannel.prototype._ended = function () {
    this.closed = true;
    this.conn = null;
    this._status('ended');
  };

  MwsChannel.prototype._connect = function () {
    if (this.closed) return;
    var gen = ++this.gen, self = this;
    this._status('connecting');
    var live = function () { return self.gen === gen && !self.closed; };
    this['_' + this.transport](live);
    /* auto, before any transport got through: one that neither opens nor fails (a
     * proxy that holds the Upgrade, or buffers the event stream) is given up on. */
    if (!this.locked && this.transport !== 'longpoll') {
      setTimeout(function () {
        if (!live() || self.locked || self.state === 'open') return;
        self.gen++;
        if (self.conn) self.conn.close();
        self._failed(false);
      }, this.openTimeout);
    }
  };

  MwsChannel.prototype._websocket = function (live) {
    var self = this, opened = false;
    var u = withQuery(this.url, 'last_event_id', this.lastId).replace(/^http/, 'ws');
    var ws;
    try {
      ws = new WebSocket(u);
    } catch (e) {
      setTimeout(function () { if (live()) self._failed(false); }, 0);
      return;
    }
    this.conn = { close: function () { ws.close(1000); } };
    ws.onopen = function () { if (live()) { opened = true; self._opened(); } };
    ws.onmessage = function (ev) {
      if (!live() || typeof ev.data !== 'string') return;
      var m;
      try { m = JSON.parse(ev.data); } catch (e) { return; }
      if (m.lost) self._lost(m.id);
      else self._deliver(m.id, m.channel, m.data, m.binary);
    };
    ws.onclose = function (ev) {
      if (!live()) return;
      if (ev.code === 1000 && ev.reason === 'channel deleted') self._ended();
      else self._failed(opened);
    };
  };

  MwsChannel.prototype._eventsource = function (live) {
    var self = this, opened = false;
    var es = new EventSource(withQuery(this.url, 'last_event_id', this.lastId));
    var channel = this.channels.length === 1 ? this.channels[0] : null;
    this.conn = { close: function () { es.close(); } };
    var onData = function (name, binary) {
      return function (ev) {
        if (live()) self._deliver(ev.lastEventId || null, name, ev.data, binary);
      };
    };
    es.onopen = function () {
      if (!live()) return;
      if (opened) { self.reconnects++; self._status('open'); } else { opened = true; self._opened(); }
    };
    es.onmessage = onData(channel, false);
    es.addEventListener('binary', onData(channel, true));
    if (this.channels.length > 1) {
      this.channels.forEach(function (c) { es.addEventListener(c, onData(c, false)); });
    }
    es.addEventListener('lost', function (ev) { if (live()) self._lost(ev.data); });
    es.onerror = function () {
      if (!live()) return;
      /* The browser retries by itself, once this transport is known to get through. */
      if (es.readyState === EventSource.CONNECTING && (opened || self.locked)) {
        self._status('retrying', { native: true });   /* the browser reconnects itself */
        return;
      }
      es.close();
      self._failed(opened);
    };
  };

  MwsChannel.prototype._longpoll = function (live) {
    var self = this;
    var ctl = typeof AbortController === 'function' ? new AbortController() : null;
    var first = true;
    this.conn = { close: function () { if (ctl) ctl.abort(); } };
    var poll = function () {
      if (!live()) return;
      var u = withQuery(self.url, 'last_event_id', self.lastId);
      fetch(u, { headers: { Accept: 'application/json' }, cache: 'no-store',
                 signal: ctl ? ctl.signal : undefined })
        .then(function (res) {
          if (res.status === 410) return { end: true };
          if (res.status === 204) {
            var id = res.headers.get('X-Last-Event-ID');
            if (id && !self.lastId) self.lastId = id;
            return {};
          }
          if (!res.ok) throw new Error('HTTP ' + res.status);
          return res.json();
        })
        .then(function (body) {
          if (!live()) return;
          if (body.end) { self._ended(); return; }
          if (first) { first = false; self._opened(); }
          if (body.lost) self._lost(null);
          (body.messages || []).forEach(function (m) {
            self._deliver(m.id, m.channel, m.data, m.binary);
          });
          if (body.last_id && (!self.lastId || isNewer(body.last_id, self.lastId))) {
            self.lastId = body.last_id;
          }
          poll();
        }, function () {
          if (live()) self._failed(!first);
        });
    };
    /* Shown as open while the first poll waits: a held poll has nothing to say yet. */
    this._status('open', { pending: true });
    poll();
  };

  /* Stop for good. */
  MwsChannel.prototype.close = function () {
    if (this.closed) return;
    this.closed = true;
    this.gen++;
    if (this.timer) clearTimeout(this.timer);
    if (this.conn) this.conn.close();
    this.conn = null;
    this._status('closed');
  };

  global.MwsChannel = MwsChannel;
}(typeof window !== 'undefined' ? window : this));
