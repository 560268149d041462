/*!
 * presence.js: presenced's no-build browser client. Plain JavaScript, no
 * dependencies; works with or without htmx on the page.
 *
 * Configuration is read from the page, from (later wins):
 *   1. the <script src=".../presence.js"> tag's data-* attributes, then
 *   2. the first element carrying the data-presence-config attribute,
 * with the same attribute names in both places:
 *   data-mode        "full" (heartbeat, activity, typing, status picker) or
 *                    "watch" (only keeps dots and avatars tidy). Default: full
 *                    when a data-presence-config element or a
 *                    data-heartbeat / data-session-id attribute is present,
 *                    else watch.
 *   data-heartbeat   heartbeat interval in ms (default 30000)
 *   data-session-id  this tab's session id, as put in the stream's sid= by the
 *                    server (a tab that already has one in sessionStorage
 *                    keeps it, and sid= of room streams is rewritten to match)
 *   data-room        default room for typing fields without a room of their own
 *   data-user        the signed-in user's id (their elements get .is-self)
 *   data-token       optional bearer token (cross-origin embeds); sent as
 *                    Authorization: Bearer, and as ?token= on the beacon
 *   data-base        gateway origin, e.g. "https://gw.example" ("" = this page)
 *   data-idle        idle time before away, ms (default 300000 = 5 min)
 *   data-typing-stop typing stops this long after the last key, ms (default 3000)
 *   data-token-url   the host app's endpoint returning a fresh token (text, or
 *                    JSON {"token": "…"}), fetched with the page's cookies:
 *                    the token is renewed at ~80% of its lifetime and on a 401,
 *                    and the page's token= streams reconnect with it
 *
 * Browser lifecycle:
 *   - a tab whose sessionStorage was copied (window.open, "Duplicate tab")
 *     asks the other tabs over a BroadcastChannel whether its sid is taken,
 *     and takes a new one if so, before its streams connect;
 *   - back/forward cache: pagehide (persisted) closes the page's streams and
 *     sends the offline beacon; pageshow (persisted) reopens them (state
 *     first) and heartbeats;
 *   - every sse-connect element gets data-connection="open|reconnecting|closed";
 *   - shared mode (a data-presence-shared element, or data-shared="1"): one
 *     stream per browser, held by a leader tab (Web Lock) and relayed to the
 *     others over a BroadcastChannel; each tab heartbeats its own session.
 *
 * Page hooks:
 *   [data-presence-typing="{room}"]     input/textarea whose input marks typing
 *   [data-presence-set-status="busy"]   click sets your status (online, away,
 *                                       busy, offline); away/busy are sticky
 *   img[data-presence-avatar]           avatar image; on error it is removed
 *                                       and the avatar shows initials
 *   .pr-dot[data-presence-user]         with sse-swap="presence-{id}": updated
 *                                       in place when the event arrives
 *   form[data-presence-chat]            demo message box: echoed locally
 *
 * window.Presence = { sessionId, config, status(), setStatus(s), heartbeat(),
 *                     startTyping(room), stopTyping(room), destroy(),
 *                     setTokenSource(fn: () => Promise<string>), renewToken(),
 *                     reconnect(), ... }
 */
(function () {
  'use strict';

  var script = document.currentScript;
  var SID_KEY = 'presence.sid';
  var STATUS_KEY = 'presence.status';
  var STATUSES = { online: 'Online', away: 'Away', busy: 'Busy', offline: 'Offline' };
  var SID_RE = /^[A-Za-z0-9_-]{8,64}$/;
  var TYPING_EVERY = 2000;

  // Safe to include twice: the first copy wins; a later copy with a full
  // configuration upgrades a copy that started in watch mode.
  var existing = window.Presence;
  if (existing && existing.__presenced) {
    if (script && existing.config.mode === 'watch') {
      existing.__upgrade(readConfig(script));
    }
    return;
  }

  var cfg = null;
  var sessionId = null;
  var full = false;
  var sidFromStorage = false;

  // ---------------------------------------------------------------- config

  function num(v, d) {
    var n = parseInt(v, 10);
    return n > 0 ? n : d;
  }

  function readConfig(scriptEl) {
    var merged = {};
    var sources = [scriptEl, document.querySelector('[data-presence-config]')];
    var explicitFull = false;
    for (var i = 0; i < sources.length; i++) {
      var el = sources[i];
      if (!el || !el.dataset) continue;
      if (el.hasAttribute('data-presence-config')) explicitFull = true;
      for (var k in el.dataset) {
        if (Object.prototype.hasOwnProperty.call(el.dataset, k)) merged[k] = el.dataset[k];
      }
    }
    if (merged.heartbeat || merged.sessionId) explicitFull = true;
    var mode = merged.mode === 'watch' || merged.mode === 'full' ? merged.mode : (explicitFull ? 'full' : 'watch');
    return {
      mode: mode,
      heartbeat: num(merged.heartbeat, 30000),
      idle: num(merged.idle, 300000),
      typingStop: num(merged.typingStop, 3000),
      sessionId: merged.sessionId || '',
      room: merged.room || '',
      user: merged.user || '',
      token: merged.token || '',
      tokenUrl: merged.tokenUrl || '',
      shared: merged.shared || '',
      base: (merged.base || '').replace(/\/+$/, '')
    };
  }

  function storage(op, key, value) {
    try {
      if (op === 'get') return window.sessionStorage.getItem(key);
      if (op === 'set') window.sessionStorage.setItem(key, value);
      if (op === 'del') window.sessionStorage.removeItem(key);
    } catch (e) { /* storage disabled: per-page values only */ }
    return null;
  }

  function newSessionId() {
    var bytes = new Uint8Array(16);
    (window.crypto || window.msCrypto).getRandomValues(bytes);
    var s = '';
    for (var i = 0; i < bytes.length; i++) s += (bytes[i] + 256).toString(16).slice(1);
    return s;
  }

  // One session id per tab, kept across reloads in sessionStorage.
  function resolveSessionId(fromPage) {
    var s = storage('get', SID_KEY);
    sidFromStorage = !!(s && SID_RE.test(s));
    if (!s || !SID_RE.test(s)) s = SID_RE.test(fromPage) ? fromPage : newSessionId();
    storage('set', SID_KEY, s);
    return s;
  }

  // ----------------------------------------------------- stream session ids

  // Streams that join a room must run in the tab's session, or the tab would
  // count as two sessions. Rewrite (or add) sid= on the page's gateway's
  // /sse/room/{id} and /sse?room= URLs, unless they only watch (watch=1).
  // A stream that carries token= gets the current token (after a renewal).
  function fixStreamURL(url) {
    if (!cfg || typeof url !== 'string') return url;
    var u;
    try { u = new URL(url, window.location.href); } catch (e) { return url; }
    var ours = cfg.base ? cfg.base : window.location.origin;
    if (u.origin !== ours || u.pathname.indexOf('/sse') !== 0) return url;
    var changed = false;
    if (cfg.token && u.searchParams.has('token') && u.searchParams.get('token') !== cfg.token) {
      u.searchParams.set('token', cfg.token);
      changed = true;
    }
    var joins = u.pathname.indexOf('/sse/room/') === 0 || (u.pathname === '/sse' && u.searchParams.get('room'));
    if (full && sessionId && joins && !/^(1|true|yes|on)$/i.test(u.searchParams.get('watch') || '') &&
        u.searchParams.get('sid') !== sessionId) {
      u.searchParams.set('sid', sessionId);
      changed = true;
    }
    return changed ? u.toString() : url;
  }

  function hookEventSources() {
    var hx = window.htmx;
    if (hx) {
      if (hx.__presenceHooked) return;
      hx.__presenceHooked = true;
      // htmx-ext-sse creates every EventSource (including reconnects) through
      // htmx.createEventSource and keeps one that is already set.
      var orig = hx.createEventSource;
      hx.createEventSource = function (url) {
        start(); // htmx may process the page before our DOMContentLoaded
        // Starting may have held this very stream (a sid claim under way, or
        // shared mode): hand htmx-ext-sse a closed stand-in instead.
        if (st.hold) return heldSource();
        url = fixStreamURL(url);
        return orig ? orig(url) : new EventSource(url, { withCredentials: true });
      };
      return;
    }
    // htmx not loaded yet: it has not read the attributes, so rewrite them.
    var els = document.querySelectorAll('[sse-connect],[data-sse-connect]');
    for (var i = 0; i < els.length; i++) {
      var name = els[i].hasAttribute('sse-connect') ? 'sse-connect' : 'data-sse-connect';
      var v = els[i].getAttribute(name);
      var f = fixStreamURL(v);
      if (f !== v) els[i].setAttribute(name, f);
    }
  }

  // ------------------------------------------------------------------ http

  function url(path) {
    return cfg.base + path;
  }

  function post(path, body, keepalive, retried) {
    var headers = { 'Content-Type': 'application/json' };
    if (cfg.token) headers.Authorization = 'Bearer ' + cfg.token;
    if (!window.fetch) return Promise.resolve(null);
    return window.fetch(url(path), {
      method: 'POST',
      headers: headers,
      body: JSON.stringify(body),
      credentials: cfg.token ? 'same-origin' : 'include',
      keepalive: !!keepalive,
      cache: 'no-store'
    }).then(function (res) {
      // An expired token: renew it once and send again.
      if (res.status === 401 && !retried && tokenSource()) {
        return renewToken('401').then(function (t) {
          if (t) return post(path, body, keepalive, true);
          emit('presence:unauthorized', { path: path, status: res.status });
          return res;
        });
      }
      if (res.status === 401 || res.status === 403) emit('presence:unauthorized', { path: path, status: res.status });
      return res;
    }, function () { return null; });
  }

  function beacon(path, body) {
    var u = url(path);
    if (cfg.token) u += (u.indexOf('?') < 0 ? '?' : '&') + 'token=' + encodeURIComponent(cfg.token);
    var data = JSON.stringify(body);
    // A string body goes out as text/plain: no CORS preflight, which a
    // beacon could not do.
    if (navigator.sendBeacon && navigator.sendBeacon(u, data)) return;
    post(path, body, true);
  }

  function emit(name, detail) {
    try {
      document.dispatchEvent(new CustomEvent(name, { detail: detail }));
    } catch (e) { /* very old browser */ }
  }

  // ---------------------------------------------------------------- status

  var st = {
    auto: 'online',      // online, or away after idling
    manual: null,        // away, busy or offline chosen in the picker (sticky)
    lastActivity: Date.now(),
    sent: null,          // status last sent
    beatTimer: 0,
    idleTimer: 0,
    gone: false          // after pagehide, until pageshow
  };

  function current() {
    if (st.manual) return st.manual;
    if (document.visibilityState === 'hidden') return 'away';
    return st.auto;
  }

  function send(status, keepalive) {
    st.sent = status;
    emit('presence:status', { status: status, sessionId: sessionId });
    return post('/api/presence', { status: status, sessionId: sessionId }, keepalive);
  }

  function scheduleBeat() {
    clearTimeout(st.beatTimer);
    if (st.gone) return;
    if (sh && !sh.leader) announce(); // the leader drops tabs it stops hearing from
    st.beatTimer = setTimeout(function () { beat(false); }, cfg.heartbeat);
  }

  // beat sends the current status (always when forced or due; otherwise only
  // when it changed) and restarts the heartbeat clock.
  function beat(onlyIfChanged, keepalive) {
    if (st.gone || st.claiming) return;
    var s = current();
    if (s === 'offline') {
      if (st.sent !== 'offline') send('offline', keepalive);
      clearTimeout(st.beatTimer);
      return;
    }
    if (onlyIfChanged && s === st.sent) return;
    send(s, keepalive);
    scheduleBeat();
  }

  function setStatus(s) {
    if (!Object.prototype.hasOwnProperty.call(STATUSES, s)) throw new Error('presence: unknown status ' + s);
    if (s === 'online') {
      st.manual = null;
      st.auto = 'online';
      st.lastActivity = Date.now();
      storage('del', STATUS_KEY);
    } else {
      st.manual = s;
      storage('set', STATUS_KEY, s);
    }
    renderPicker();
    if (full) beat(true);
  }

  function renderPicker() {
    var chosen = st.manual || 'online';
    var els = document.querySelectorAll('[data-presence-set-status]');
    for (var i = 0; i < els.length; i++) {
      els[i].setAttribute('aria-pressed', els[i].getAttribute('data-presence-set-status') === chosen ? 'true' : 'false');
    }
  }

  // -------------------------------------------------------------- activity

  function onActivity() {
    var now = Date.now();
    var wasAway = st.auto === 'away';
    if (!wasAway && now - st.lastActivity < 1000) return; // cheap for pointermove
    st.lastActivity = now;
    if (wasAway) {
      st.auto = 'online';
      beat(true);
    }
  }

  function checkIdle() {
    if (st.auto === 'online' && Date.now() - st.lastActivity >= cfg.idle) {
      st.auto = 'away';
      beat(true);
    }
  }

  // A closing tab fires visibilitychange (hidden) and pagehide close
  // together. Their requests travel on separate connections, so an "away"
  // sent at once could reach the server after the offline beacon and bring
  // the ended session back for a whole TTL. The away therefore waits a
  // moment, and pagehide cancels it.
  var HIDDEN_AWAY_DELAY = 1000;

  function onVisibility() {
    clearTimeout(st.hideTimer);
    if (document.visibilityState === 'hidden') {
      st.hideTimer = setTimeout(function () {
        if (document.visibilityState === 'hidden') beat(true, true); // keepalive: the tab may be frozen next
      }, HIDDEN_AWAY_DELAY);
    } else {
      st.lastActivity = Date.now();
      st.auto = 'online';
      beat(true);
    }
  }

  function onPageHide() {
    stopAllTyping(true);
    st.gone = true;
    clearTimeout(st.hideTimer);
    clearTimeout(st.beatTimer);
    st.sent = 'offline';
    beacon('/api/presence', { status: 'offline', sessionId: sessionId });
  }

  function onPageShow(e) {
    if (!e.persisted || !st.gone) return; // restored from the back/forward cache
    st.gone = false;
    if (st.claiming) return; // the claim's end heartbeats
    st.lastActivity = Date.now();
    st.auto = 'online';
    beat(false);
  }

  // ---------------------------------------------------------------- typing

  var typing = {}; // room → { active, lastSent, timer }

  function typingPath(room) {
    return '/api/presence/room/' + encodeURIComponent(room) + '/typing';
  }

  function startTyping(room) {
    if (!room) return;
    var t = typing[room] || (typing[room] = { active: false, lastSent: 0, timer: 0 });
    var now = Date.now();
    if (!t.active || now - t.lastSent >= TYPING_EVERY) {
      t.active = true;
      t.lastSent = now;
      post(typingPath(room), { typing: true });
    }
    clearTimeout(t.timer);
    t.timer = setTimeout(function () { stopTyping(room); }, cfg.typingStop);
  }

  function stopTyping(room, viaBeacon) {
    var t = typing[room];
    if (!t) return;
    clearTimeout(t.timer);
    if (!t.active) return;
    t.active = false;
    t.lastSent = 0;
    if (viaBeacon) beacon(typingPath(room), { typing: false });
    else post(typingPath(room), { typing: false }, true);
  }

  function stopAllTyping(viaBeacon) {
    for (var room in typing) {
      if (Object.prototype.hasOwnProperty.call(typing, room)) stopTyping(room, viaBeacon);
    }
  }

  function typingRoom(el) {
    return el.getAttribute('data-presence-typing') || cfg.room;
  }

  function onInput(e) {
    var el = e.target && e.target.closest ? e.target.closest('[data-presence-typing]') : null;
    if (!el) return;
    var room = typingRoom(el);
    var value = 'value' in el ? el.value : el.textContent;
    if (!value || !String(value).trim()) stopTyping(room);
    else startTyping(room);
  }

  function onSubmit(e) {
    var form = e.target;
    if (!form || !form.querySelectorAll) return;
    var fields = form.querySelectorAll('[data-presence-typing]');
    for (var i = 0; i < fields.length; i++) stopTyping(typingRoom(fields[i]));
    if (form.hasAttribute('data-presence-chat')) chatSubmit(e, form);
  }

  // Demo message box: messages stay in this tab (the demo shows presence).
  function chatSubmit(e, form) {
    e.preventDefault();
    var field = form.querySelector('textarea, input[type="text"]');
    if (!field) return;
    var text = field.value.trim();
    if (!text) return;
    var log = document.querySelector('[data-presence-chat-log]');
    if (log) {
      var empty = log.querySelector('.pr-chat__empty');
      if (empty) empty.parentNode.removeChild(empty);
      var msg = document.createElement('div');
      msg.className = 'pr-msg';
      var meta = document.createElement('div');
      meta.className = 'pr-msg__meta';
      var who = document.createElement('strong');
      var me = document.querySelector('.pr-me__name');
      who.textContent = me ? me.textContent : 'You';
      var when = document.createElement('time');
      var d = new Date();
      when.dateTime = d.toISOString();
      when.textContent = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
      meta.appendChild(who);
      meta.appendChild(when);
      var body = document.createElement('p');
      body.className = 'pr-msg__text';
      body.textContent = text;
      msg.appendChild(meta);
      msg.appendChild(body);
      log.appendChild(msg);
      log.scrollTop = log.scrollHeight;
    }
    field.value = '';
    autosize(field);
    field.focus();
  }

  function onKeydown(e) {
    var el = e.target;
    // Enter sends, Shift+Enter makes a new line, in the demo message box.
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing && el && el.tagName === 'TEXTAREA' && el.form && el.form.hasAttribute('data-presence-chat')) {
      e.preventDefault();
      if (el.form.requestSubmit) el.form.requestSubmit();
      else el.form.dispatchEvent(new Event('submit', { cancelable: true, bubbles: true }));
    }
  }

  function autosize(el) {
    if (!el || el.tagName !== 'TEXTAREA' || !el.form || !el.form.hasAttribute('data-presence-chat')) return;
    el.style.height = 'auto';
    el.style.height = Math.min(el.scrollHeight, 160) + 'px';
  }

  // ------------------------------------------------- dots, avatars, .is-self

  // A presence-{id} event carries a Dot. Instead of htmx's outerHTML swap,
  // copy its status onto the dot in place, so that every copy of a user's dot
  // keeps its own size and label; the avatar around it follows.
  function onSSEBeforeMessage(e) {
    var elt = e.target;
    if (!elt || !elt.matches || !elt.matches('.pr-dot[data-presence-user]')) return;
    var data = e.detail && e.detail.data;
    if (typeof data !== 'string') return;
    var tpl = document.createElement('template');
    tpl.innerHTML = data;
    var incoming = tpl.content.querySelector('[data-presence-user][data-status]');
    if (!incoming || incoming.getAttribute('data-presence-user') !== elt.getAttribute('data-presence-user')) return;
    var s = incoming.getAttribute('data-status');
    if (!Object.prototype.hasOwnProperty.call(STATUSES, s)) return;
    e.preventDefault();
    applyStatus(elt, s, incoming.getAttribute('aria-label'));
  }

  function applyStatus(dot, s, label) {
    var changed = dot.getAttribute('data-status') !== s;
    dot.setAttribute('data-status', s);
    if (label) {
      dot.setAttribute('aria-label', label);
      dot.setAttribute('title', label);
    }
    var text = dot.querySelector('.pr-dot__label');
    if (text) text.textContent = STATUSES[s];
    var avatar = dot.closest('.pr-avatar[data-presence-user]');
    if (avatar && avatar.getAttribute('data-presence-user') === dot.getAttribute('data-presence-user')) {
      avatar.setAttribute('data-status', s);
    }
    if (changed) {
      dot.classList.remove('pr-dot--changed');
      void dot.offsetWidth; // restart the pulse animation
      dot.classList.add('pr-dot--changed');
    }
  }

  function avatarFailed(img) {
    var avatar = img.closest('.pr-avatar');
    if (avatar) avatar.classList.add('pr-avatar--fallback');
    if (img.parentNode) img.parentNode.removeChild(img);
  }

  function onError(e) {
    var img = e.target;
    if (img && img.tagName === 'IMG' && img.hasAttribute('data-presence-avatar')) avatarFailed(img);
  }

  // Tidy freshly added content: images that failed before we listened, the
  // signed-in user's own elements.
  function tidy(root) {
    if (!root || !root.querySelectorAll) return;
    var imgs = root.querySelectorAll('img[data-presence-avatar]');
    for (var i = 0; i < imgs.length; i++) {
      if (imgs[i].complete && imgs[i].naturalWidth === 0 && imgs[i].getAttribute('src')) avatarFailed(imgs[i]);
    }
    if (cfg && cfg.user) {
      var els = root.querySelectorAll('[data-presence-user]');
      for (var j = 0; j < els.length; j++) {
        if (els[j].getAttribute('data-presence-user') === cfg.user) els[j].classList.add('is-self');
      }
    }
  }

  function onHtmxLoad(e) {
    tidy(e.target && e.target.parentNode ? e.target.parentNode : document);
    if (full) renderPicker();
  }

  // --------------------------------------------------------------- streams

  // htmx-ext-sse keeps an element's EventSource in htmx's internal data;
  // reading it there is the only way to close or replace one stream.
  function internal(elt) { return elt ? elt['htmx-internal-data'] : null; }
  function sourceOf(elt) { var d = internal(elt); return d ? d.sseEventSource : null; }
  function connectEls() { return document.querySelectorAll('[sse-connect],[data-sse-connect]'); }
  function connectAttr(elt) { return elt.hasAttribute('sse-connect') ? 'sse-connect' : 'data-sse-connect'; }

  // data-connection is the page's hook (and presence.css's indicator);
  // aria-busy tells assistive technology the region's content is stale.
  function setConn(elt, state) {
    if (!elt || !elt.getAttribute || elt.getAttribute('data-connection') === state) return;
    elt.setAttribute('data-connection', state);
    if (state === 'reconnecting') elt.setAttribute('aria-busy', 'true');
    else elt.removeAttribute('aria-busy');
  }

  function onSSEOpen(e) {
    if (e.detail && e.detail.source && e.detail.source !== sourceOf(e.target)) return; // a replaced one
    setConn(e.target, 'open');
  }

  // An EventSource error carries no status: a 401 (expired token) looks like
  // any drop. With a token source, renew it (at most once per burst);
  // htmx-ext-sse's own retry of a failed stream then goes through
  // htmx.createEventSource, which puts the new token in its URL.
  function onSSEError(e) {
    var src = e.detail && e.detail.source;
    if (src && src !== sourceOf(e.target)) return;
    setConn(e.target, st.gone ? 'closed' : 'reconnecting');
    if (!st.gone && tokenSource() && hasToken(e.target)) {
      renewToken('stream');
    }
  }

  function hasToken(elt) {
    var v = elt.getAttribute(connectAttr(elt)) || '';
    return /[?&]token=/.test(v);
  }

  function detach(src) {
    if (!src) return;
    src.onerror = null; // or htmx-ext-sse would open yet another one
    src.onopen = null;
  }

  function closeStream(elt) {
    var src = sourceOf(elt);
    if (src) {
      detach(src);
      src.__presenceClosed = true;
      src.close();
    }
    setConn(elt, 'closed');
  }

  // reconnect replaces an element's stream with a new one from its (fixed)
  // sse-connect URL: make before break, so a room stream's session never
  // has no stream. htmx-ext-sse opens a stream when it sees
  // htmx:afterProcessNode; children's sse-swap listeners are re-registered
  // on the new stream the same way.
  function reconnect(elt) {
    var hx = window.htmx;
    if (!hx || !elt || !document.body.contains(elt)) return;
    var old = sourceOf(elt);
    // A stream that failed on its own is retried by htmx-ext-sse (with a
    // timer we cannot cancel): a second one here would leak.
    if (old && old.readyState === 2 && !old.__presenceClosed) return;
    detach(old);
    var name = connectAttr(elt);
    var v = elt.getAttribute(name);
    var f = fixStreamURL(v);
    if (f !== v) elt.setAttribute(name, f);
    setConn(elt, 'reconnecting');
    hx.trigger(elt, 'htmx:afterProcessNode');
    var fresh = sourceOf(elt);
    if (fresh && fresh !== old) {
      var kids = elt.querySelectorAll('[sse-swap],[data-sse-swap],[hx-trigger],[data-hx-trigger]');
      for (var i = 0; i < kids.length; i++) {
        var k = kids[i];
        if (k.hasAttribute('sse-connect') || k.hasAttribute('data-sse-connect')) continue;
        if (k.parentElement && k.parentElement.closest('[sse-connect],[data-sse-connect]') === elt) hx.trigger(k, 'htmx:afterProcessNode');
      }
    }
    if (old && old !== fresh) {
      if (!fresh || old.readyState === 2) { old.close(); return; }
      var done = false;
      var finish = function () { if (!done) { done = true; old.close(); } };
      fresh.addEventListener('open', finish);
      fresh.addEventListener('error', finish);
      setTimeout(finish, 5000);
    }
  }

  function reconnectAll() {
    var els = connectEls();
    for (var i = 0; i < els.length; i++) reconnect(els[i]);
  }

  // Back/forward cache: a page in the cache must not keep its streams (it
  // would stay in the room, unseen). Close them on the way in; reopen them
  // (state comes first on a new stream) on the way out.
  function onLifecycleHide(e) {
    sharedHide();
    if (!e.persisted) return;
    clearTimeout(tok.timer);
    var els = connectEls();
    for (var i = 0; i < els.length; i++) closeStream(els[i]);
    closeChannel();
  }

  function onLifecycleShow(e) {
    // After the full client's pageshow (which clears st.gone).
    if (e.persisted) setTimeout(restoreStreams, 0);
  }

  function restoreStreams() {
    openChannel();
    sharedShow();
    var t = jwtTimes(cfg.token);
    if (tokenSource() && t && t.exp && t.exp - Date.now() / 1000 < 2) {
      renewToken('expiry').then(function () { reconnectAll(); });
      return;
    }
    reconnectAll();
    scheduleRenew();
  }

  // ---------------------------------------------------------------- tokens

  var tok = { fn: null, timer: 0, pending: null, last: 0, renewals: 0 };

  function tokenSource() {
    if (tok.fn) return tok.fn;
    if (cfg && cfg.tokenUrl) return fetchTokenURL;
    return null;
  }

  function fetchTokenURL() {
    return window.fetch(cfg.tokenUrl, {
      credentials: 'include', cache: 'no-store', headers: { Accept: 'application/json, text/plain' }
    }).then(function (res) {
      if (!res.ok) throw new Error('presence: token endpoint answered ' + res.status);
      return res.text();
    }).then(function (text) {
      text = String(text).trim();
      if (text.charAt(0) === '{') text = (JSON.parse(text) || {}).token;
      return text;
    });
  }

  // The JWT's iat and exp (seconds), read without verifying: only to time
  // the renewal.
  function jwtTimes(t) {
    try {
      var p = String(t).split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      while (p.length % 4) p += '=';
      var o = JSON.parse(window.atob(p));
      return { iat: +o.iat || 0, exp: +o.exp || 0 };
    } catch (e) { return null; }
  }

  // Renew at ~80% of the token's lifetime.
  function scheduleRenew() {
    clearTimeout(tok.timer);
    if (!tokenSource() || !cfg.token || st.gone) return;
    var t = jwtTimes(cfg.token);
    if (!t || !t.exp) return;
    var now = Date.now() / 1000;
    var from = t.iat && t.iat <= now ? t.iat : now;
    var wait = (from + 0.8 * (t.exp - from) - now) * 1000;
    tok.timer = setTimeout(function () { renewToken('expiry'); }, Math.max(500, wait));
  }

  function renewToken(why) {
    var src = tokenSource();
    if (!src) return Promise.resolve(null);
    if (tok.pending) return tok.pending;
    // A burst of 401s and stream errors asks once; a token that just came
    // is used as it is.
    if (why !== 'expiry' && why !== 'manual' && Date.now() - tok.last < 2000) return Promise.resolve(cfg.token);
    tok.last = Date.now();
    tok.pending = Promise.resolve().then(function () { return src(); }).then(function (t) {
      tok.pending = null;
      if (typeof t !== 'string' || !/^[A-Za-z0-9_.-]+$/.test(t)) throw new Error('presence: the token source gave no token');
      setToken(t);
      return t;
    }).catch(function (err) {
      tok.pending = null;
      emit('presence:token-error', { error: String(err && err.message || err) });
      clearTimeout(tok.timer);
      if (!st.gone) tok.timer = setTimeout(function () { renewToken('expiry'); }, 5000);
      return null;
    });
    return tok.pending;
  }

  function setToken(t) {
    var changed = t !== cfg.token;
    cfg.token = t;
    tok.renewals++;
    scheduleRenew();
    if (changed && sh && sh.leader && sh.es) openShared();
    if (changed) {
      // Streams authenticated by token= would end at the old one's exp.
      var els = connectEls();
      for (var i = 0; i < els.length; i++) if (hasToken(els[i])) reconnect(els[i]);
    }
    emit('presence:token', { renewals: tok.renewals });
  }

  function setTokenSource(fn) {
    if (typeof fn !== 'function') throw new Error('presence: setTokenSource needs a function returning a Promise<string>');
    tok.fn = fn;
    if (cfg) scheduleRenew();
  }

  // ------------------------------------------------------ duplicated tabs

  // A duplicated tab (window.open of this URL, "Duplicate tab") starts with a
  // copy of sessionStorage, so with this tab's sid: closing either would end
  // the other's session. At load a tab whose sid came from storage asks the
  // others whether it is taken; if a live tab answers, it takes a new one.
  // Its streams are held (sse-connect renamed) until then, so that no
  // stream ever joins in the other tab's session.
  var CLAIM_WAIT = 300; // ms: other tabs answer within a few
  var chan = null;
  var me = newSessionId();

  function openChannel() {
    if (chan || !window.BroadcastChannel) return;
    try { chan = new BroadcastChannel('presence.sid'); } catch (e) { return; }
    chan.onmessage = function (e) {
      var m = e.data || {};
      if (m.t === 'who' && m.from !== me && m.sid === sessionId && !st.claiming && !st.gone) {
        chan.postMessage({ t: 'mine', sid: m.sid, to: m.from });
      } else if (m.t === 'mine' && m.to === me && st.claiming && m.sid === sessionId) {
        st.taken = true;
      }
    };
  }

  function closeChannel() {
    if (chan) { chan.close(); chan = null; }
  }

  function holdStreams() {
    var held = [];
    var els = connectEls();
    for (var i = 0; i < els.length; i++) {
      if (sourceOf(els[i])) continue;
      var name = connectAttr(els[i]);
      held.push([els[i], name, els[i].getAttribute(name)]);
      els[i].removeAttribute(name);
    }
    return held;
  }

  function heldSource() {
    var noop = function () {};
    return { readyState: 2, url: '', withCredentials: true, __presenceClosed: true,
      addEventListener: noop, removeEventListener: noop, close: noop, onerror: null, onopen: null };
  }

  function releaseStreams(held) {
    for (var i = 0; i < held.length; i++) {
      var el = held[i][0];
      el.setAttribute(held[i][1], fixStreamURL(held[i][2]));
      var d = internal(el);
      // Processed by htmx while held (without sse-connect): open it now.
      // Not yet processed: htmx will, with the restored attribute.
      if (d && d.initHash) reconnect(el);
    }
  }

  function claimSession(fromStorage, done) {
    openChannel();
    var shared = sharedWanted();
    // Shared mode holds the page's streams for good: the leader's carries them.
    var sharedHeld = shared ? holdStreams() : null;
    if (shared) st.hold = true;
    var finish = function (held) {
      if (!shared) st.hold = false;
      if (shared) startShared(sharedHeld);
      else if (held) releaseStreams(held);
      done();
    };
    if (!fromStorage || !chan) { finish(null); return; }
    st.claiming = true;
    st.hold = true;
    var held = shared ? null : holdStreams();
    chan.postMessage({ t: 'who', sid: sessionId, from: me });
    setTimeout(function () {
      if (st.taken) {
        sessionId = SID_RE.test(cfg.sessionId) && cfg.sessionId !== sessionId ? cfg.sessionId : newSessionId();
        storage('set', SID_KEY, sessionId);
        api.sessionId = sessionId;
        emit('presence:session', { sessionId: sessionId, duplicated: true });
      }
      st.claiming = false;
      st.taken = false;
      finish(held);
    }, CLAIM_WAIT);
  }

  // ------------------------------------------------- one stream per browser

  // Shared mode (a data-presence-shared element, or data-shared="1"): the
  // tabs of this origin elect a leader with a Web Lock; the leader holds ONE
  // watch-only stream for the union of the rooms and users the tabs show
  // and relays every event over a BroadcastChannel; each tab swaps them into
  // its own sse-swap elements as htmx-ext-sse would. Each tab keeps its own
  // session (heartbeats) and joins its room with POST /api/presence/room/…,
  // since the watch-only stream joins nothing. Over HTTP/1.1 a browser has
  // six connections per origin: this keeps many tabs at one.
  var sh = null;

  function sharedWanted() {
    return !!(window.BroadcastChannel && navigator.locks && navigator.locks.request &&
      (document.querySelector('[data-presence-shared]') || /^(1|true|yes|on)$/i.test(cfg.shared || '')));
  }

  function splitList(v) {
    var out = [];
    String(v || '').split(',').forEach(function (p) { p = p.trim(); if (p) out.push(p); });
    return out;
  }

  // The topics of one held sse-connect URL.
  function topicsOf(raw) {
    var t = { room: '', join: false, rooms: [], users: [], list: false, max: '' };
    var u;
    try { u = new URL(raw, window.location.href); } catch (e) { return t; }
    var m = /^\/sse\/room\/([^/]+)$/.exec(u.pathname);
    t.room = m ? decodeURIComponent(m[1]) : (u.searchParams.get('room') || '');
    t.join = !!t.room && !/^(1|true|yes|on)$/i.test(u.searchParams.get('watch') || '');
    t.rooms = splitList(u.searchParams.get('rooms'));
    t.users = splitList(u.searchParams.get('users') || (u.pathname === '/sse/users' ? u.searchParams.get('ids') : ''));
    t.list = u.searchParams.get('list') === '1';
    t.max = u.searchParams.get('max') || '';
    return t;
  }

  function startShared(held) {
    sh = { id: me, els: [], leader: false, release: null, es: null, tabs: {}, cache: {}, union: '', timer: 0, chan: null, retry: 0 };
    api.__shared = sh;
    for (var i = 0; i < held.length; i++) {
      held[i][0].setAttribute('data-presence-shared-stream', '');
      sh.els.push({ el: held[i][0], t: topicsOf(held[i][2]) });
    }
    sh.chan = new BroadcastChannel('presence.shared');
    sh.chan.onmessage = function (e) { onShared(e.data || {}); };
    joinRooms();
    announce();
    elect();
  }

  function myTopics() {
    var rooms = [], users = [], list = false, max = '';
    sh.els.forEach(function (x) {
      if (x.t.room && rooms.indexOf(x.t.room) < 0) rooms.push(x.t.room);
      x.t.rooms.forEach(function (r) { if (rooms.indexOf(r) < 0) rooms.push(r); });
      x.t.users.forEach(function (u) { if (users.indexOf(u) < 0) users.push(u); });
      list = list || x.t.list;
      max = max || x.t.max;
    });
    return { rooms: rooms, users: users, list: list, max: max };
  }

  function joinRooms() {
    sh.els.forEach(function (x) {
      if (x.t.join) post('/api/presence/room/' + encodeURIComponent(x.t.room), { action: 'join', sessionId: sessionId });
    });
  }

  function announce() {
    var t = myTopics();
    var m = { t: 'topics', from: sh.id, rooms: t.rooms, users: t.users, list: t.list, max: t.max };
    if (sh.leader) onShared(m);
    else sh.chan.postMessage(m);
  }

  function elect() {
    // A waiting lock request also keeps a page out of the back/forward
    // cache: it is aborted on pagehide (sharedHide).
    var ac = window.AbortController ? new AbortController() : null;
    sh.abort = ac;
    navigator.locks.request('presence.leader', ac ? { signal: ac.signal } : {}, function () {
      if (st.gone || !sh) return null;
      return new Promise(function (resolve) {
        sh.release = resolve;
        sh.leader = true;
        sh.tabs = {};
        sh.tabs[sh.id] = withSeen(myTopics());
        sh.chan.postMessage({ t: 'hello' });
        // Give the other tabs a moment to say what they show.
        clearTimeout(sh.timer);
        sh.timer = setTimeout(openShared, 200);
      });
    }).catch(function () { /* aborted */ });
  }

  function abdicate() {
    if (!sh) return;
    clearTimeout(sh.timer);
    if (sh.es) { sh.es.close(); sh.es = null; }
    sh.union = '';
    sh.leader = false;
    if (sh.release) { var r = sh.release; sh.release = null; r(); }
  }

  function withSeen(t) { t.seen = Date.now(); return t; }

  function onShared(m) {
    if (!sh || st.gone) return;
    if (m.t === 'ev') { if (!sh.leader) dispatch(m.name, m.data); return; }
    if (m.t === 'conn') { if (!sh.leader) setSharedConn(m.state); return; }
    if (m.t === 'hello') { if (!sh.leader) announce(); return; }
    if (!sh.leader) return;
    if (m.t === 'topics') {
      sh.tabs[m.from] = withSeen({ rooms: m.rooms || [], users: m.users || [], list: !!m.list, max: m.max || '' });
      if (!reopenIfNeeded()) {
        // Covered already: this tab gets the current state from the cache.
        for (var name in sh.cache) {
          if (Object.prototype.hasOwnProperty.call(sh.cache, name)) sh.chan.postMessage({ t: 'ev', name: name, data: sh.cache[name], to: m.from });
        }
        if (sh.es && sh.es.readyState === 1) sh.chan.postMessage({ t: 'conn', state: 'open' });
      }
    } else if (m.t === 'bye') {
      delete sh.tabs[m.from];
      reopenIfNeeded();
    }
  }

  function unionOf() {
    var rooms = [], users = [], list = false, max = '';
    var now = Date.now();
    for (var id in sh.tabs) {
      if (!Object.prototype.hasOwnProperty.call(sh.tabs, id)) continue;
      var t = sh.tabs[id];
      if (id !== sh.id && now - t.seen > 3 * cfg.heartbeat + 5000) { delete sh.tabs[id]; continue; } // gone quietly
      t.rooms.forEach(function (r) { if (rooms.indexOf(r) < 0) rooms.push(r); });
      t.users.forEach(function (u) { if (users.indexOf(u) < 0) users.push(u); });
      list = list || t.list;
      max = max || t.max;
    }
    rooms.sort();
    users.sort();
    return { rooms: rooms.slice(0, 16), users: users.slice(0, 100), list: list, max: max };
  }

  function reopenIfNeeded() {
    var u = unionOf();
    var key = JSON.stringify(u);
    if (key === sh.union && sh.es) return false;
    clearTimeout(sh.timer);
    sh.timer = setTimeout(openShared, 50);
    return true;
  }

  function openShared() {
    if (!sh || !sh.leader || st.gone) return;
    var u = unionOf();
    sh.union = JSON.stringify(u);
    var q = new URLSearchParams();
    if (u.rooms.length) q.set('rooms', u.rooms.join(','));
    if (u.users.length) q.set('users', u.users.join(','));
    q.set('watch', '1');
    if (u.list) q.set('list', '1');
    if (u.max) q.set('max', u.max);
    if (cfg.token) q.set('token', cfg.token);
    var es = new EventSource(url('/sse?' + q.toString()), { withCredentials: true });
    var old = sh.es;
    sh.es = es;
    sh.cache = {};
    var names = [];
    u.rooms.forEach(function (r) { names.push('members-' + r, 'typing-' + r, 'member-list-' + r); });
    u.users.forEach(function (id) { names.push('presence-' + id); });
    names.forEach(function (name) {
      es.addEventListener(name, function (e) {
        if (sh.es !== es) return;
        sh.cache[name] = e.data;
        sh.chan.postMessage({ t: 'ev', name: name, data: e.data });
        dispatch(name, e.data);
      });
    });
    es.onopen = function () {
      if (old) { old.close(); old = null; }
      sh.retry = 0;
      broadcastConn('open');
    };
    es.onerror = function () {
      if (sh.es !== es) return;
      broadcastConn('reconnecting');
      if (es.readyState === 2) { // failed (a 401, say): renew and retry with backoff
        sh.retry = Math.min((sh.retry || 0) + 1, 6);
        var again = function () { if (sh.es === es && sh.leader) openShared(); };
        if (tokenSource()) renewToken('stream').then(function () { setTimeout(again, 500); });
        else setTimeout(again, 500 * Math.pow(2, sh.retry));
      }
    };
  }

  function broadcastConn(state) {
    setSharedConn(state);
    sh.chan.postMessage({ t: 'conn', state: state });
  }

  function setSharedConn(state) {
    sh.els.forEach(function (x) { setConn(x.el, state); });
  }

  // dispatch swaps one relayed event into this tab's sse-swap elements, as
  // htmx-ext-sse would: members-R goes to a stream of room R as members,
  // and as members-R to a stream that lists R in rooms=.
  function dispatch(name, data) {
    var hx = window.htmx;
    if (!hx || !sh) return;
    var m = /^(members|typing|member-list)-(.+)$/.exec(name);
    sh.els.forEach(function (x) {
      var local = null;
      if (m && x.t.room === m[2]) local = m[1];
      else if (m && x.t.rooms.indexOf(m[2]) >= 0) local = name;
      else if (!m && x.t.users.indexOf(name.slice('presence-'.length)) >= 0) local = name;
      if (!local) return;
      var swaps = [x.el].concat([].slice.call(x.el.querySelectorAll('[sse-swap],[data-sse-swap]')));
      swaps.forEach(function (el) {
        var v = el.getAttribute('sse-swap') || el.getAttribute('data-sse-swap');
        if (!v || splitList(v).indexOf(local) < 0) return;
        if (el !== x.el && el.parentElement.closest('[data-presence-shared-stream]') !== x.el) return;
        if (!hx.trigger(el, 'htmx:sseBeforeMessage', { data: data, type: local })) return;
        var spec = el.closest('[hx-swap]');
        var style = spec ? spec.getAttribute('hx-swap').split(/\s+/)[0] : 'innerHTML';
        hx.swap(el, data, { swapStyle: style });
        hx.trigger(el, 'htmx:sseMessage', { data: data, type: local });
      });
    });
  }

  function sharedHide() {
    if (!sh) return;
    if (sh.abort && !sh.leader) { sh.abort.abort(); sh.abort = null; }
    if (!sh.leader) sh.chan.postMessage({ t: 'bye', from: sh.id });
    abdicate();
  }

  function sharedShow() {
    if (!sh) return;
    joinRooms();
    announce();
    elect();
  }

  // ----------------------------------------------------------------- start

  function onClick(e) {
    var el = e.target && e.target.closest ? e.target.closest('[data-presence-set-status]') : null;
    if (!el) return;
    e.preventDefault();
    setStatus(el.getAttribute('data-presence-set-status'));
  }

  var listeners = [];
  function on(target, type, fn, opts) {
    target.addEventListener(type, fn, opts);
    listeners.push([target, type, fn, opts]);
  }

  var ACTIVITY = ['pointerdown', 'pointermove', 'keydown', 'wheel', 'touchstart', 'scroll'];

  function startFull() {
    if (full) return;
    full = true;
    sessionId = resolveSessionId(cfg.sessionId);
    var saved = storage('get', STATUS_KEY);
    if (saved === 'away' || saved === 'busy') st.manual = saved;
    hookEventSources();
    for (var i = 0; i < ACTIVITY.length; i++) on(window, ACTIVITY[i], onActivity, { passive: true, capture: true });
    on(document, 'visibilitychange', onVisibility);
    on(window, 'pagehide', onPageHide);
    on(window, 'pageshow', onPageShow);
    on(document, 'input', onInput);
    on(document, 'input', function (e) { autosize(e.target); });
    on(document, 'submit', onSubmit, true);
    on(document, 'keydown', onKeydown);
    on(document, 'click', onClick);
    st.idleTimer = setInterval(checkIdle, Math.max(250, Math.min(10000, Math.floor(cfg.idle / 4))));
    api.sessionId = sessionId;
    renderPicker();
    claimSession(sidFromStorage, function () { if (!st.gone) beat(false); });
  }

  function start() {
    if (cfg) return;
    cfg = readConfig(script);
    api.config = cfg;
    on(document, 'error', onError, true);
    on(document, 'htmx:sseBeforeMessage', onSSEBeforeMessage);
    on(document, 'htmx:load', onHtmxLoad);
    on(document, 'htmx:sseOpen', onSSEOpen);
    on(document, 'htmx:sseError', onSSEError);
    on(window, 'pagehide', onLifecycleHide);
    on(window, 'pageshow', onLifecycleShow);
    // A frozen leader relays nothing: hand the stream over, take part again
    // on resume.
    on(document, 'freeze', sharedHide);
    on(document, 'resume', sharedShow);
    var els = connectEls();
    for (var i = 0; i < els.length; i++) if (!sourceOf(els[i]) || sourceOf(els[i]).readyState !== 1) setConn(els[i], 'reconnecting');
    tidy(document);
    if (cfg.mode === 'full') startFull();
    else openChannel();
    scheduleRenew();
  }

  var api = {
    __presenced: true,
    version: '1',
    config: null,
    sessionId: null,
    status: function () { return full ? current() : null; },
    setStatus: setStatus,
    heartbeat: function () { if (full) beat(false); },
    startTyping: function (room) { if (full) startTyping(room || cfg.room); },
    stopTyping: function (room) { stopTyping(room || cfg.room); },
    fixStreamURL: fixStreamURL,
    setTokenSource: setTokenSource,
    renewToken: function () { return renewToken('manual'); },
    reconnect: reconnectAll,
    destroy: function () {
      clearTimeout(st.beatTimer);
      clearTimeout(tok.timer);
      closeChannel();
      clearInterval(st.idleTimer);
      for (var i = 0; i < listeners.length; i++) listeners[i][0].removeEventListener(listeners[i][1], listeners[i][2], listeners[i][3]);
      listeners = [];
      delete window.Presence;
    },
    __state: st,
    __tokens: tok,
    __tick: function () { if (full) checkIdle(); },
    __upgrade: function (next) {
      if (!cfg || full || next.mode !== 'full') return;
      cfg = next;
      api.config = cfg;
      startFull();
    }
  };
  window.Presence = api;

  // Start as soon as the page's config element can exist. Deferred scripts
  // (the gateway's pages) run after parsing, before htmx processes the page.
  if (document.readyState === 'loading') {
    // Config may be below this script: read it at DOMContentLoaded, but hook
    // htmx's EventSource creation now if htmx is already here.
    document.addEventListener('DOMContentLoaded', start);
    if (window.htmx) hookEventSources();
  } else {
    start();
  }
})();
