// The live debug page: follows the server-sent events stream named by this script's
// `data-events` (conntrack-tokio's debug page `events` endpoint, `html=1`).
//
// - `opened`: the row (rendered by the server, escaped there) goes on top of the live table.
// - `closed`: the row leaves the live table and goes on top of "Recently closed".
// - `summary`: every `data-refresh` seconds the page re-reads itself (a `fetch` of its own
//   URL) and swaps in the new tables and pictures: totals, ages, bytes and the chart stay
//   current, and rows lost by a slow page are put back.
// - `dropped`: the server dropped events this page was too slow to take; re-read at once.
//
// Without scripts the page is plain HTML that reloads itself (`<noscript>` refresh). If the
// stream cannot be opened (refused, not there), the page re-reads itself on a timer instead.
(function () {
  'use strict';
  var me = document.getElementById('live');
  if (!me || !window.EventSource || !window.fetch || !window.DOMParser) return;
  var refresh = Math.max(1, parseInt(me.dataset.refresh, 10) || 5) * 1000;
  var dir = location.pathname.replace(/\/*$/, '/');
  var url = new URL(me.dataset.events, location.origin + dir);
  url.search = url.search + (url.search ? '&' : '?') + location.search.replace(/^\?/, '');
  var limit = parseInt(url.searchParams.get('limit'), 10) || 1000;
  var lost = 0;
  var lastSync = Date.now();
  var syncing = null; // the re-read in progress
  var sorted = null; // {table, col, asc}: the last header the user clicked

  var status = document.createElement('p');
  status.id = 'live-status';
  var h1 = document.querySelector('h1');
  if (h1) h1.insertAdjacentElement('afterend', status);
  function say(text) {
    status.textContent = text + (lost ? ' (' + lost + ' events dropped by the server, resynchronised)' : '');
    status.dataset.state = text.split(':')[0];
  }

  function body(id) {
    var t = document.getElementById(id);
    return t && t.tBodies[0];
  }
  function idColumn(table) {
    var ths = table.tHead ? table.tHead.rows[0].cells : [];
    for (var i = 0; i < ths.length; i++) if (ths[i].textContent.trim() === 'ID') return i;
    return 0;
  }
  function rowId(table, tr) {
    var cell = tr.cells[idColumn(table)];
    return cell ? (cell.dataset.v || cell.textContent.trim()) : '';
  }
  function findRow(tableId, id) {
    var b = body(tableId);
    if (!b) return null;
    var t = b.parentNode;
    for (var i = 0; i < b.rows.length; i++) if (rowId(t, b.rows[i]) === String(id)) return b.rows[i];
    return null;
  }
  function parseRow(html) {
    var holder = document.createElement('tbody');
    holder.innerHTML = html;
    return holder.rows[0] || null;
  }
  function prepend(tableId, tr) {
    var b = body(tableId);
    if (!b || !tr) return;
    b.insertBefore(tr, b.firstChild);
    while (b.rows.length > limit) b.deleteRow(b.rows.length - 1);
  }

  // Remember the user's sort, to apply it again after a re-read.
  document.addEventListener('click', function (e) {
    var th = e.target.closest && e.target.closest('table.sortable th');
    if (!th) return;
    setTimeout(function () {
      sorted = { table: th.closest('table').id, col: th.cellIndex, asc: th.dataset.asc === '1' };
    }, 0);
  }, true);
  function resort() {
    if (!sorted) return;
    var t = document.getElementById(sorted.table);
    var th = t && t.tHead && t.tHead.rows[0].cells[sorted.col];
    if (!th) return;
    var keep = sorted;
    th.dataset.asc = keep.asc ? '0' : '1';
    th.click();
    sorted = keep;
  }

  // The page's own scripts (the sort handlers) bound to new elements: run them again.
  function rerunScripts(doc) {
    doc.querySelectorAll('script').forEach(function (s) {
      if (s.id !== 'live') new Function(s.textContent)();
    });
  }

  function tablesOf(n) {
    return n.tagName === 'TABLE' ? [n] : Array.prototype.slice.call(n.querySelectorAll('table'));
  }

  // Swaps in a fresh rendering of the page: each table keeps its head (and the sort handlers
  // bound to it) and takes the new body; everything else is replaced where it changed. When
  // the page's structure changed, everything is replaced and the page's scripts run again.
  function swap(doc) {
    var keep = function (n) { return n.nodeType === 1 && n.tagName !== 'SCRIPT' && n.id !== 'live-status'; };
    var olds = Array.prototype.filter.call(document.body.childNodes, keep);
    var news = Array.prototype.filter.call(doc.body.childNodes, keep);
    var same = olds.length === news.length && olds.every(function (o, i) {
      var n = news[i], a = tablesOf(o), b = tablesOf(n);
      return o.tagName === n.tagName && o.id === n.id && a.length === b.length &&
        a.every(function (t, j) { return t.id === b[j].id && t.tBodies[0] && b[j].tBodies[0]; });
    });
    if (same) {
      olds.forEach(function (o, i) {
        var n = news[i], a = tablesOf(o), b = tablesOf(n);
        if (a.length) {
          a.forEach(function (t, j) { t.replaceChild(document.adoptNode(b[j].tBodies[0]), t.tBodies[0]); });
        } else if (o.outerHTML !== n.outerHTML) {
          o.replaceWith(document.adoptNode(n));
        }
      });
    } else {
      olds.forEach(function (o) { o.remove(); });
      var first = document.body.querySelector('script');
      news.forEach(function (n) { document.body.insertBefore(document.adoptNode(n), first); });
      rerunScripts(doc);
    }
    resort();
  }

  function resync() {
    if (syncing) return syncing;
    lastSync = Date.now();
    syncing = fetch(location.href, { headers: { Accept: 'text/html' }, cache: 'no-store' })
      .then(function (r) { if (!r.ok) throw new Error('HTTP ' + r.status); return r.text(); })
      .then(function (html) { swap(new DOMParser().parseFromString(html, 'text/html')); })
      .catch(function (e) { say('stale: ' + e.message); })
      .then(function () { syncing = null; });
    return syncing;
  }
  // For a console (and the browser test): re-read the page now; a promise.
  window.conntrackLive = { resync: resync };

  function on(source, name, f) {
    source.addEventListener(name, function (e) {
      var data;
      try { data = JSON.parse(e.data); } catch (err) { return; }
      f(data);
    });
  }

  function start() {
    var source = new EventSource(url.toString());
    var poll = null;
    source.onopen = function () {
      say('live: following ' + url.pathname);
      if (poll) { clearInterval(poll); poll = null; }
    };
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        // Refused or gone for good: fall back to re-reading the page on a timer.
        say('polling: the event stream is not available');
        if (!poll) poll = setInterval(resync, refresh);
      } else {
        say('reconnecting');
      }
    };
    on(source, 'opened', function (d) {
      if (!d.html || findRow('connections', d.info.id)) return;
      prepend('connections', parseRow(d.html));
    });
    on(source, 'closed', function (d) {
      var live = findRow('connections', d.info.id);
      if (live) live.remove();
      if (d.html && !findRow('closed', d.info.id)) prepend('closed', parseRow(d.html));
    });
    on(source, 'summary', function () {
      if (Date.now() - lastSync >= refresh - 100) resync();
    });
    on(source, 'dropped', function (d) {
      lost = d.dropped;
      resync();
    });
  }

  // After the load event, so that the open stream never holds up the page's `load`.
  if (document.readyState === 'complete') start();
  else window.addEventListener('load', function () { setTimeout(start, 0); });
})();
