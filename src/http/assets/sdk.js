/*! workspaced SDK for LMS pages. Served at /sdk/workspaced.js. API in docs/sdk.md.
 *
 *   const ws = Workspaced.attach({
 *     server: 'https://ide.example.edu',   // workspaced's public URL
 *     student: 'alice',
 *     token: '<from your backend: POST /api/workspaces/alice/token with the LMS key>',
 *   });
 *   ws.on('warning', (e) => ...);   // { secondsLeft, stopAt, message }
 *   ws.on('stopped', (e) => ...);   // { reason, message, stoppedAt }
 *   ws.on('running', (s) => ...);   ws.on('status', (s) => ...);
 *   ws.keepAlive();                 // a heartbeat now
 *   ws.detach();                    // stop listening, polling and sending
 *
 * While the page is visible and the student uses it (keys, pointer, scroll), a heartbeat goes out at most once per
 * interval (30 s, shorter for short idle timeouts). A visible page without input sends nothing.
 * The default modal uses the classes .workspaced-modal, .workspaced-modal-box, .workspaced-modal-title,
 * .workspaced-modal-countdown and .workspaced-modal-button: restyle them with CSS, or pass `modal: false` and draw
 * your own from the events.
 */
(function (global) {
  'use strict';

  function attach(options) {
    const server = String(options.server || '').replace(/\/+$/, '');
    const student = options.student;
    const token = options.token;
    if (!student || !token) throw new Error('Workspaced.attach needs { student, token }');
    const listeners = {};
    const s = { heartbeatEvery: 30, pollEvery: 5, lastSent: 0, status: null, skew: 0, stopped: false,
                timer: null, detached: false, modal: null, tick: null };
    const headers = { 'Authorization': 'Bearer ' + token, 'Accept': 'application/json' };
    const base = server + '/w/' + encodeURIComponent(student) + '/_workspaced/';

    function emit(type, detail) {
      (listeners[type] || []).forEach(function (fn) { try { fn(detail); } catch (e) { console.error(e); } });
    }

    function keepAlive() {
      s.lastSent = Date.now();
      return fetch(server + '/api/workspaces/heartbeat', {
        method: 'POST', headers: Object.assign({ 'Content-Type': 'application/json' }, headers),
        body: JSON.stringify({ student_id: student }),
      }).then(function (r) { if (r.ok) { hideModal(); emit('heartbeat', {}); } return r.ok; })
        .catch(function () { return false; });
    }

    function onInput() {
      if (s.detached || document.visibilityState !== 'visible') return;
      if (s.modal && s.modal.style.display !== 'none') { keepAlive(); return; }
      if (Date.now() - s.lastSent >= s.heartbeatEvery * 1000) keepAlive();
    }
    let lastMove = 0;
    function onMove() { const n = Date.now(); if (n - lastMove > 1000) { lastMove = n; onInput(); } }
    const inputs = ['keydown', 'pointerdown', 'wheel', 'scroll', 'touchstart'];
    inputs.forEach(function (t) { global.addEventListener(t, onInput, { capture: true, passive: true }); });
    global.addEventListener('mousemove', onMove, { capture: true, passive: true });

    function minutes(secs) {
      if (secs < 60) return secs + ' seconds';
      const m = Math.round(secs / 60);
      return m === 1 ? '1 minute' : m + ' minutes';
    }

    function buildModal() {
      const m = document.createElement('div');
      m.className = 'workspaced-modal';
      m.setAttribute('role', 'alertdialog');
      m.style.cssText = 'position:fixed;inset:0;z-index:2147483647;display:none;align-items:center;' +
        'justify-content:center;background:rgba(0,0,0,.45);font:15px/1.5 system-ui,sans-serif';
      m.innerHTML = '<div class="workspaced-modal-box" style="background:#fff;color:#1d2330;max-width:28rem;' +
        'margin:1rem;padding:1.5rem;border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.3)">' +
        '<div class="workspaced-modal-title" style="font-weight:600;font-size:1.1rem"></div>' +
        '<div class="workspaced-modal-countdown" style="font-size:2rem;margin:.5rem 0 1rem;' +
        'font-variant-numeric:tabular-nums"></div>' +
        '<button class="workspaced-modal-button" type="button" style="font:inherit;padding:.55rem 1.2rem;' +
        'border:0;border-radius:8px;background:#2563eb;color:#fff;cursor:pointer">Keep working</button></div>';
      m.querySelector('button').addEventListener('click', keepAlive);
      document.body.appendChild(m);
      return m;
    }

    function showModal(e) {
      if (options.modal === false) return;
      if (!s.modal) s.modal = buildModal();
      s.modal.querySelector('.workspaced-modal-title').textContent = e.message;
      s.modal.style.display = 'flex';
      clearInterval(s.tick);
      const render = function () {
        const left = Math.max(0, Math.round((e.stopAt - Date.now()) / 1000));
        s.modal.querySelector('.workspaced-modal-countdown').textContent =
          Math.floor(left / 60) + ':' + String(left % 60).padStart(2, '0');
      };
      render();
      s.tick = setInterval(render, 250);
    }
    function hideModal() { if (s.modal) s.modal.style.display = 'none'; clearInterval(s.tick); }

    function poll() {
      if (s.detached) return;
      fetch(base + 'status', { headers: headers, cache: 'no-store' }).then(function (r) {
        if (!r.ok) throw new Error('status ' + r.status);
        return r.json();
      }).then(function (st) {
        const was = s.status;
        s.status = st;
        s.skew = Date.parse(st.now) - Date.now();
        s.heartbeatEvery = st.heartbeat_interval_seconds || 30;
        s.pollEvery = st.poll_interval_seconds || 5;
        emit('status', st);
        if (st.status === 'running') {
          if (!was || was.status !== 'running') emit('running', st);
          s.stopped = false;
          if (st.warning && st.stop_at) {
            const e = { secondsLeft: st.seconds_left, stopAt: Date.parse(st.stop_at) - s.skew,
              message: 'Workspace will close in ' + minutes(st.warning_lead_seconds) +
                '. Move your mouse or type to keep it alive.' };
            emit('warning', e);
            showModal(e);
          } else {
            hideModal();
          }
        } else {
          hideModal();
          if (st.status === 'stopped' && was && was.status !== 'stopped' && !s.stopped) {
            s.stopped = true;
            emit('stopped', { reason: st.stop_reason, message: st.stop_message || 'Workspace stopped.',
              stoppedAt: st.stopped_at });
          }
        }
      }).catch(function (e) { emit('error', e); }).then(function () {
        if (!s.detached) s.timer = setTimeout(poll, s.pollEvery * 1000);
      });
    }
    poll();

    return {
      on: function (type, fn) { (listeners[type] = listeners[type] || []).push(fn); return this; },
      keepAlive: keepAlive,
      get status() { return s.status; },
      detach: function () {
        s.detached = true;
        clearTimeout(s.timer);
        hideModal();
        inputs.forEach(function (t) { global.removeEventListener(t, onInput, { capture: true }); });
        global.removeEventListener('mousemove', onMove, { capture: true });
      },
    };
  }

  global.Workspaced = { attach: attach, version: '1' };
})(window);
