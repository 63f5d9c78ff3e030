// Keeps the images table current without reloading.
//
// Rows arrive already rendered (and escaped) by the server, from /events (Server-Sent
// Events) and /api/images; this script only places them. Every row carries its
// data-version (when the image last changed), so a slow re-listing never overwrites a
// newer live update. The server sends an "upstream" event whenever its stream from the
// receiver opens; the table is then re-listed, because changes made while it was
// closed were never sent.
(function () {
  'use strict';
  const body = document.body;
  if (body.dataset.page !== 'images') return;

  const filter = body.dataset.status || '';
  const token = body.dataset.token || '';
  const firstPage = token === '';
  const tbody = document.querySelector('#images tbody');
  const live = document.getElementById('live');
  const listError = document.getElementById('list-error');
  const empty = document.getElementById('empty');

  function rowId(tr) { return Number(tr.id.slice('image-'.length)); }
  function version(tr) { return Number(tr.dataset.version || 0); }
  function parseRow(html) {
    const t = document.createElement('template');
    t.innerHTML = html.trim();
    return t.content.firstElementChild;
  }
  function updateEmpty() { empty.hidden = tbody.rows.length > 0; }
  function lastPage() { return document.getElementById('older') === null; }

  // Where a row that is not on the page yet belongs: newest first, and only if its id
  // falls within this page (a new image shows on the first page, not on page three).
  function insert(tr) {
    const id = rowId(tr);
    const rows = Array.from(tbody.rows);
    if (rows.length === 0) {
      if (firstPage) tbody.appendChild(tr);
      return;
    }
    const newest = rowId(rows[0]);
    const oldest = rowId(rows[rows.length - 1]);
    if (id > newest && !firstPage) return;
    if (id < oldest && !lastPage()) return;
    const before = rows.find((other) => rowId(other) < id);
    tbody.insertBefore(tr, before || null);
  }

  function upsert(update) {
    const existing = document.getElementById('image-' + update.id);
    if (existing && version(existing) > update.version) return;
    if (filter && update.status !== filter) {
      if (existing) existing.remove();
    } else {
      const tr = parseRow(update.html);
      if (existing) existing.replaceWith(tr); else insert(tr);
    }
    updateEmpty();
  }

  let refreshing = false;
  let again = false;
  async function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    try {
      const query = new URLSearchParams({ status: filter, page: token });
      const response = await fetch('/api/images?' + query.toString(), { cache: 'no-store' });
      const listing = await response.json();
      if (listing.error) {
        listError.textContent = listing.error;
        listError.hidden = false;
        return;
      }
      listError.hidden = true;
      const current = new Map(Array.from(tbody.rows).map((tr) => [rowId(tr), tr]));
      const rows = [];
      for (const update of listing.rows) {
        const mine = current.get(update.id);
        current.delete(update.id);
        if (mine && version(mine) >= update.version) {
          if (!filter || mine.dataset.status === filter) rows.push(mine);
        } else {
          rows.push(parseRow(update.html));
        }
      }
      // Rows changed live after the listing was taken stay.
      for (const tr of current.values()) {
        if (version(tr) > listing.as_of) rows.push(tr);
      }
      rows.sort((a, b) => rowId(b) - rowId(a));
      tbody.replaceChildren(...rows);
      updateEmpty();
    } catch (err) {
      listError.textContent = 'Could not refresh the list: ' + err;
      listError.hidden = false;
    } finally {
      refreshing = false;
      if (again) { again = false; refresh(); }
    }
  }

  // Problems are shown after a moment, so a normal (re)connection does not flash a banner.
  let bannerTimer = null;
  function problem(text) {
    clearTimeout(bannerTimer);
    bannerTimer = setTimeout(() => { live.textContent = text; live.hidden = false; }, 1000);
  }
  function fine() {
    clearTimeout(bannerTimer);
    live.hidden = true;
    body.dataset.live = 'on';
  }

  let source = null;
  function connect() {
    source = new EventSource('/events');
    source.addEventListener('upstream', (e) => {
      const state = JSON.parse(e.data);
      if (state.connected) {
        fine();
        refresh();
      } else {
        body.dataset.live = 'off';
        problem('Live updates paused: ' + state.message);
      }
    });
    source.addEventListener('image', (e) => upsert(JSON.parse(e.data)));
    source.addEventListener('resync', () => refresh());
    source.onerror = () => {
      body.dataset.live = 'off';
      problem('Lost the connection to the facewire web server; retrying…');
      // EventSource retries by itself unless the server answered with an error.
      if (source.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
    };
  }
  connect();
})();
