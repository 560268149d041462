/*
 * presence-htmx4.js: presenced's fragments on htmx 4.
 *
 * htmx 4's own SSE extension (hx-sse.js, loaded before this file) swaps only
 * unnamed messages; a named event (`event: members`) becomes a DOM event on
 * the element that holds hx-sse:connect, and htmx 4 has no sse-swap. The
 * gateway's streams send named events only (members, typing,
 * presence-{userId}), and its fragments carry sse-swap="…" + hx-swap, as
 * htmx-ext-sse 2 reads them. This file gives those attributes their htmx 2
 * meaning under htmx 4, so that one markup serves both:
 *
 *   a named event E on a connection swaps its data into every element below
 *   that connection (and not below a nested one) whose sse-swap lists E,
 *   with that element's hx-swap (default innerHTML), through htmx.swap.
 *
 * Before each swap it fires htmx-ext-sse 2's cancelable htmx:sseBeforeMessage
 * on the element (detail.data, detail.type), so listeners written for htmx 2
 * keep working: presence.js updates a dot in place there (keeping its size
 * and label) instead of letting the swap replace it.
 *
 * htmx 4 logs one console warning per page ("sse-swap is removed in htmx 4"):
 * expected, the attribute is read here.
 */
(function () {
  'use strict';
  if (window.__presenceHtmx4) return;
  window.__presenceHtmx4 = true;

  var CONNECT = '[hx-sse\\:connect],[data-hx-sse\\:connect]';

  function listens(el, name) {
    var v = el.getAttribute('sse-swap');
    if (!v) return false;
    var names = v.split(',');
    for (var i = 0; i < names.length; i++) {
      if (names[i].trim() === name) return true;
    }
    return false;
  }

  function onMessage(e) {
    var conn = e.target;
    var m = e.detail && e.detail.message;
    if (!conn || !conn.querySelectorAll || !m || !m.event || typeof m.data !== 'string') return;
    if (!window.htmx || typeof window.htmx.swap !== 'function') return;
    // Collect first: a swap replaces elements (a members swap brings new
    // dots), and those must not receive this same event.
    var targets = [];
    var all = [conn].concat(Array.prototype.slice.call(conn.querySelectorAll('[sse-swap]')));
    for (var i = 0; i < all.length; i++) {
      var el = all[i];
      if (!listens(el, m.event)) continue;
      if (el !== conn && el.parentElement.closest(CONNECT) !== conn) continue;
      targets.push(el);
    }
    for (var j = 0; j < targets.length; j++) {
      var t = targets[j];
      if (!t.isConnected) continue;
      var before = new CustomEvent('htmx:sseBeforeMessage', {
        bubbles: true, cancelable: true, detail: { data: m.data, type: m.event, lastEventId: m.id, elt: t }
      });
      if (!t.dispatchEvent(before)) continue;
      window.htmx.swap({ sourceElement: t, target: t, text: m.data, swap: t.getAttribute('hx-swap') || 'innerHTML' });
    }
  }

  // The event name htmx.org 4.0.1's hx-sse.js fires before each message.
  document.addEventListener('htmx:sse:before:message', onMessage);
})();
