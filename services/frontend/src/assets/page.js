// The pages' script (the CSP allows no inline script; settings come from <body data-…>).
//
// Markup always comes from the server, already escaped: this script places rows it is
// sent, and otherwise only sets text (textContent), attributes and positions.
(function () {
  'use strict';
  const body = document.body;

  // Forms that destroy something ask first.
  document.addEventListener('submit', (event) => {
    const message = event.target.dataset && event.target.dataset.confirm;
    if (message && !window.confirm(message)) event.preventDefault();
  });

  // Face pictures that do not exist leave an empty square, not a broken image.
  for (const crop of document.querySelectorAll('img.crop')) {
    const broken = () => crop.classList.add('broken');
    if (crop.complete && crop.naturalWidth === 0) broken();
    crop.addEventListener('error', broken);
  }

  if (body.dataset.page === 'images') imagesPage();
  if (body.dataset.page === 'image') imagePage();

  // Keeps the images table current without reloading.
  //
  // Rows arrive already rendered by the server, from /events (Server-Sent Events) and
  // /api/images. Every row carries its data-version (when the image last changed), so a
  // slow re-listing never overwrites a newer live update. The server sends an
  // "upstream" event whenever its stream from the receiver opens; the table is then
  // re-listed, because changes made while it was closed were never sent.
  function imagesPage() {
    const filter = body.dataset.status || '';
    const persons = (body.dataset.persons || '').split(',').filter(Boolean).map(Number);
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
    // Whether an image with this status and these people belongs on this page.
    function wanted(status, people) {
      return (!filter || status === filter) && persons.every((p) => people.includes(p));
    }
    function rowPeople(tr) {
      return (tr.dataset.people || '').split(' ').filter(Boolean).map(Number);
    }

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
      if (!wanted(update.status, update.person_ids || [])) {
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
        for (const p of persons) query.append('person', String(p));
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
            if (wanted(mine.dataset.status, rowPeople(mine))) rows.push(mine);
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
  }

  // The image page: places the face boxes over the photo (in percent, so they scale),
  // opens the naming form on a click, and names or unassigns faces through the JSON
  // endpoints, relabelling them in place.
  function imagePage() {
    const imageId = body.dataset.image;
    const photo = document.getElementById('photo');
    const img = document.getElementById('photo-img');
    const editor = document.getElementById('face-editor');
    const nameInput = document.getElementById('face-name');
    const editorError = document.getElementById('face-error');
    const listStatus = document.getElementById('face-status');
    const names = document.getElementById('people-names');

    function numbers(text) { return (text || '').split(' ').filter(Boolean).map(Number); }
    function setBox(el, [left, top, width, height]) {
      el.style.left = left + '%';
      el.style.top = top + '%';
      el.style.width = width + '%';
      el.style.height = height + '%';
    }
    // Boxes come in percent when the server knew the photo's size; otherwise they are
    // placed from their pixel box once the photo has loaded.
    function placeFaces() {
      const w = img.naturalWidth;
      const h = img.naturalHeight;
      for (const face of photo.querySelectorAll('.face')) {
        if (face.dataset.pct) {
          setBox(face, numbers(face.dataset.pct));
        } else if (w > 0 && h > 0) {
          const [x, y, bw, bh] = numbers(face.dataset.box);
          setBox(face, [x / w * 100, y / h * 100, bw / w * 100, bh / h * 100]);
        } else {
          continue;
        }
        face.classList.add('placed');
      }
    }
    placeFaces();
    img.addEventListener('load', placeFaces);

    function listForm(faceId) {
      return document.querySelector('#face-' + faceId + ' form.face-form');
    }

    function openEditor(face) {
      const faceId = face.dataset.faceId;
      const form = listForm(faceId);
      editor.dataset.faceId = faceId;
      editor.action = '/images/' + imageId + '/faces/' + faceId;
      nameInput.value = form ? form.elements.person_name.value : '';
      document.getElementById('face-unassign').disabled = face.dataset.personId === '0';
      editorError.hidden = true;
      // Just below the box (placed boxes carry their position in percent).
      const left = parseFloat(face.style.left) || 0;
      const bottom = (parseFloat(face.style.top) || 0) + (parseFloat(face.style.height) || 0);
      editor.style.left = Math.min(left, 70) + '%';
      editor.style.top = bottom + '%';
      for (const f of photo.querySelectorAll('.face.selected')) f.classList.remove('selected');
      face.classList.add('selected');
      editor.hidden = false;
      nameInput.focus();
    }
    function closeEditor() {
      editor.hidden = true;
      delete editor.dataset.faceId;
      for (const f of photo.querySelectorAll('.face.selected')) f.classList.remove('selected');
    }
    photo.addEventListener('click', (event) => {
      const face = event.target.closest('.face');
      if (face) openEditor(face);
    });
    document.getElementById('face-cancel').addEventListener('click', closeEditor);
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && !editor.hidden) closeEditor();
    });

    // Shows a face's new person everywhere it is shown, as text.
    function relabel(face) {
      for (const el of document.querySelectorAll('[data-face-id="' + face.id + '"]')) {
        if (el.tagName === 'FORM') {
          if (el === editor) continue;
          el.elements.person_name.value = face.person_name;
          el.querySelector('button[value="unassign"]').disabled = face.person_id === 0;
          continue;
        }
        el.dataset.personId = String(face.person_id);
        el.classList.toggle('unknown', face.person_id === 0);
        const name = el.querySelector('.face-name');
        if (name) {
          name.textContent = face.label;
          if (name.tagName === 'A') {
            if (face.person_href) name.setAttribute('href', face.person_href);
            else name.removeAttribute('href');
          }
        }
        const how = el.querySelector('.face-how');
        if (how) how.textContent = face.how;
        if (el.classList.contains('face')) el.setAttribute('aria-label', 'Face ' + face.id + ': ' + face.label);
      }
    }
    function offerName(name) {
      if (!name) return;
      const known = Array.from(names.options).some((o) => o.value === name);
      if (known) return;
      const option = document.createElement('option');
      option.value = name;
      names.appendChild(option);
    }
    async function refreshFaces() {
      try {
        const response = await fetch('/api/images/' + imageId + '/faces', { cache: 'no-store' });
        if (!response.ok) return;
        const answer = await response.json();
        answer.faces.forEach(relabel);
      } catch (err) {
        // The labels changed by this page are right already; the others wait for a reload.
      }
    }

    function say(form, kind, text) {
      const target = form === editor ? editorError : listStatus;
      if (form === editor && kind !== 'error') return;
      target.className = 'notice ' + kind;
      target.textContent = text;
      target.hidden = false;
    }

    // Every face form (the editor over the photo and the one per listed face) is sent
    // as JSON; without this script the same forms post to the server as they are.
    document.addEventListener('submit', async (event) => {
      const form = event.target;
      if (!form.classList.contains('face-form') || event.defaultPrevented) return;
      event.preventDefault();
      const faceId = Number(form.dataset.faceId);
      const action = event.submitter ? event.submitter.value : 'assign';
      const name = form.elements.person_name.value.trim();
      let url = '/api/faces/assign';
      let payload = { face_ids: [faceId], person_name: name };
      if (action === 'unassign') {
        url = '/api/faces/unassign';
        payload = { face_ids: [faceId] };
      } else if (!name) {
        say(form, 'error', 'Give a name.');
        return;
      }
      const buttons = Array.from(form.querySelectorAll('button'));
      buttons.forEach((b) => { b.disabled = true; });
      form.setAttribute('aria-busy', 'true');
      try {
        const response = await fetch(url, {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify(payload),
          credentials: 'same-origin',
        });
        const answer = await response.json().catch(() => null);
        if (!response.ok) {
          const message = answer && answer.error
            ? answer.error.message
            : 'The change failed (HTTP ' + response.status + ').';
          say(form, 'error', message);
          return;
        }
        answer.faces.forEach(relabel);
        if (answer.person) offerName(answer.person.name);
        if (answer.rematched > 0) refreshFaces();
        const face = answer.faces[0];
        say(form, 'ok', face ? 'Face ' + face.id + ': ' + face.label + '.' : 'Done.');
        if (form === editor) closeEditor();
      } catch (err) {
        say(form, 'error', 'Could not reach the facewire web server: ' + err);
      } finally {
        // Unassigning needs someone to take the face from.
        const item = document.getElementById('face-' + faceId);
        const unknown = item ? item.dataset.personId === '0' : false;
        buttons.forEach((b) => { b.disabled = b.value === 'unassign' && unknown; });
        form.removeAttribute('aria-busy');
      }
    });
  }
})();
