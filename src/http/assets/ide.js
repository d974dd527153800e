// workspaced: added by the proxy to the IDE's page (same origin, no build step).
// - Real input in the IDE (keys, pointer, wheel, focus) sends a heartbeat, at most one per interval.
//   An open tab without input sends nothing, so it does not keep the workspace alive.
// - When the idle warning starts, an overlay on top of the IDE shows a live countdown and "Keep working".
// - When the workspace stops, an overlay over the IDE says why and offers "Start again", instead of the IDE's
//   reconnect loop. The tab does not navigate away: leaving would meet the IDE's "Leave site?" dialog (a terminal
//   open, an editor unsaved). "Start again" starts it, waits until it runs and reloads; this script's own
//   `beforeunload` listener, registered before the IDE's, keeps the IDE's from asking once the workspace is known
//   stopped (there is nothing left to lose: unsaved editors are in the IDE's backups, see docs/ide-state.md).
(() => {
  if (window.__workspaced) return;
  const me = document.currentScript && document.currentScript.src;
  const base = me ? new URL('..', me).pathname : location.pathname.replace(/[^/]*$/, '');
  const api = base + '_workspaced/';
  const state = { lastInput: 0, lastSent: 0, status: null, skew: 0, heartbeatEvery: 30, pollEvery: 5, stopped: false };
  window.__workspaced = state;

  // First of all listeners (this script runs in the page's <head>, before the IDE's code): once the workspace is
  // known stopped, no later listener (the IDE's) sees the event, so the browser asks nothing.
  window.addEventListener('beforeunload', (e) => {
    if (state.stopped) e.stopImmediatePropagation();
  }, { capture: true });

  function post(path) {
    return fetch(api + path, { method: 'POST', headers: { 'Accept': 'application/json' }, cache: 'no-store' });
  }

  async function heartbeat() {
    state.lastSent = Date.now();
    try {
      const r = await post('heartbeat');
      if (r.ok) hideWarning();
    } catch (e) { /* the next input tries again */ }
  }

  function onInput() {
    const now = Date.now();
    state.lastInput = now;
    if (overlay && overlay.style.display !== 'none') { heartbeat(); return; }   // in the warning: stay at once
    if (now - state.lastSent >= state.heartbeatEvery * 1000) heartbeat();
  }
  for (const type of ['keydown', 'pointerdown', 'mousedown', 'wheel', 'touchstart']) {
    window.addEventListener(type, onInput, { capture: true, passive: true });
  }
  // The student coming back to the tab (not the IDE moving focus between its own elements).
  window.addEventListener('focus', (e) => { if (e.target === window) onInput(); });
  let lastMove = 0;
  window.addEventListener('mousemove', () => {
    const now = Date.now();
    if (now - lastMove > 1000) { lastMove = now; onInput(); }
  }, { capture: true, passive: true });

  // The overlays: plain elements with inline styles, on top of everything the IDE draws. Colours meet WCAG AA.
  const BUTTON = 'font:inherit;padding:.55rem 1.2rem;border:0;border-radius:8px;background:#1d4ed8;' +
    'color:#fff;cursor:pointer;outline-offset:2px';
  const BACKDROP = 'position:fixed;inset:0;z-index:2147483647;display:none;align-items:center;' +
    'justify-content:center;background:rgba(0,0,0,.55);font:15px/1.5 system-ui,sans-serif';
  const BOX = 'background:#fff;color:#1d2330;max-width:28rem;margin:1rem;padding:1.5rem 1.75rem;' +
    'border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.3)';
  let overlay = null, countdown = null, timer = null;
  function buildOverlay() {
    overlay = document.createElement('div');
    overlay.id = 'workspaced-warning';
    overlay.setAttribute('role', 'alertdialog');
    overlay.setAttribute('aria-modal', 'true');
    overlay.setAttribute('aria-labelledby', 'workspaced-warning-text');
    overlay.style.cssText = BACKDROP;
    const box = document.createElement('div');
    box.style.cssText = BOX;
    const title = document.createElement('div');
    title.id = 'workspaced-warning-text';
    title.setAttribute('aria-live', 'assertive');
    title.style.cssText = 'font-size:1.1rem;font-weight:600;margin-bottom:.5rem';
    countdown = document.createElement('div');
    countdown.id = 'workspaced-countdown';
    // A timer: read on demand, not announced every second (the sentence above is the announcement).
    countdown.setAttribute('role', 'timer');
    countdown.setAttribute('aria-live', 'off');
    countdown.style.cssText = 'font-size:2rem;font-variant-numeric:tabular-nums;margin:.5rem 0 1rem';
    const button = document.createElement('button');
    button.id = 'workspaced-keep-working';
    button.textContent = 'Keep working';
    button.style.cssText = BUTTON;
    button.addEventListener('click', heartbeat);
    box.append(title, countdown, button);
    overlay.append(box);
    document.body.append(overlay);
  }

  function minutes(secs) {
    if (secs < 60) return secs + ' seconds';
    const m = Math.round(secs / 60);
    return m === 1 ? '1 minute' : m + ' minutes';
  }

  function showWarning(s) {
    if (!overlay) buildOverlay();
    document.getElementById('workspaced-warning-text').textContent =
      `Workspace will close in ${minutes(s.warning_lead_seconds)}. Move your mouse or type to keep it alive.`;
    overlay.style.display = 'flex';
    const stopAt = Date.parse(s.stop_at) - state.skew;
    clearInterval(timer);
    const tick = () => {
      const left = Math.max(0, Math.round((stopAt - Date.now()) / 1000));
      countdown.textContent = Math.floor(left / 60) + ':' + String(left % 60).padStart(2, '0');
    };
    tick();
    timer = setInterval(tick, 250);
  }

  function hideWarning() {
    if (overlay) overlay.style.display = 'none';
    clearInterval(timer);
  }

  // The stopped overlay: why it stopped, when, that the files are safe, and "Start again".
  let stopped = null;
  function buildStopped() {
    stopped = document.createElement('div');
    stopped.id = 'workspaced-stopped';
    stopped.setAttribute('role', 'dialog');
    stopped.setAttribute('aria-modal', 'true');
    stopped.setAttribute('aria-labelledby', 'workspaced-stopped-title');
    stopped.setAttribute('aria-describedby', 'workspaced-stopped-detail');
    stopped.setAttribute('lang', 'en');
    stopped.style.cssText = BACKDROP;
    const box = document.createElement('div');
    box.style.cssText = BOX;
    const title = document.createElement('h2');
    title.id = 'workspaced-stopped-title';
    title.style.cssText = 'font-size:1.2rem;font-weight:600;margin:0 0 .5rem';
    const detail = document.createElement('p');
    detail.id = 'workspaced-stopped-detail';
    detail.setAttribute('aria-live', 'polite');
    detail.style.cssText = 'margin:0 0 .75rem;color:#374151';
    const safe = document.createElement('p');
    safe.textContent = 'Your files are safe: they are kept while the workspace is stopped. ' +
      'Unsaved changes come back when it starts again.';
    safe.style.cssText = 'background:#ecfdf5;color:#065f46;padding:.5rem .75rem;border-radius:8px;margin:0 0 1rem';
    const button = document.createElement('button');
    button.id = 'workspaced-start';
    button.type = 'button';
    button.textContent = 'Start again';
    button.style.cssText = BUTTON;
    button.addEventListener('click', startAgain);
    box.id = 'workspaced-stopped-box';
    box.tabIndex = -1;
    box.style.outline = 'none';
    box.append(title, detail, safe, button);
    stopped.append(box);
    // Keys inside the overlay are its own: the dead IDE underneath must not take them.
    stopped.addEventListener('keydown', (e) => {
      e.stopPropagation();
      if (e.key === 'Tab') { e.preventDefault(); button.focus(); }
    });
    document.body.append(stopped);
    // A modal: focus that moves to the dead IDE underneath (its own dialogs grab it) comes back to the overlay.
    document.addEventListener('focusin', (e) => {
      if (stopped.style.display !== 'none' && !stopped.contains(e.target)) focusStopped();
    }, true);
  }

  function when(t) { return t ? new Date(t).toLocaleString() : ''; }

  function showStopped(s) {
    if (!stopped) buildStopped();
    hideWarning();
    const button = document.getElementById('workspaced-start');
    const title = document.getElementById('workspaced-stopped-title');
    const detail = document.getElementById('workspaced-stopped-detail');
    if (s.status === 'stopping') {
      title.textContent = 'The workspace is stopping…';
      detail.textContent = 'You can start it again in a moment.';
    } else if (s.status === 'failed') {
      title.textContent = 'The workspace stopped';
      detail.textContent = s.error ? 'It could not start: ' + s.error : 'It is not running.';
    } else if (s.status === 'queued' || s.status === 'starting') {
      title.textContent = 'Starting your workspace…';
      detail.textContent = 'The IDE opens as soon as it is ready.';
    } else if (!starting) {
      title.textContent = s.stop_message || 'Your workspace is stopped';
      detail.textContent = s.stopped_at ? 'Stopped at ' + when(s.stopped_at) + '.' : 'It is not running.';
    }
    button.disabled = starting || s.status === 'stopping';
    stopped.style.display = 'flex';
    const active = document.activeElement;
    if (!active || !stopped.contains(active) || (active !== button && !button.disabled)) focusStopped();
  }

  // The button, or the box while the button is disabled (a disabled button cannot hold the focus).
  function focusStopped() {
    const button = document.getElementById('workspaced-start');
    if (button.disabled) document.getElementById('workspaced-stopped-box').focus(); else button.focus();
  }

  // "Start again": start, then the poll sees it running and reloads the page (no dialog: `state.stopped`).
  let starting = false;
  async function startAgain() {
    if (starting) return;
    starting = true;
    const button = document.getElementById('workspaced-start');
    button.disabled = true;
    document.getElementById('workspaced-stopped-title').textContent = 'Starting your workspace…';
    document.getElementById('workspaced-stopped-detail').textContent = 'The IDE opens as soon as it is ready.';
    try {
      const r = await post('start');
      if (!r.ok && r.status !== 202) {
        const e = await r.json().catch(() => ({}));
        starting = false;
        button.disabled = false;
        document.getElementById('workspaced-stopped-detail').textContent =
          (e.error && e.error.message) || ('Start failed (' + r.status + ').');
        return;
      }
    } catch (e) {
      starting = false;
      button.disabled = false;
      document.getElementById('workspaced-stopped-detail').textContent = 'Cannot reach the service; try again.';
      return;
    }
    clearTimeout(pollTimer);
    poll();
  }

  let pollTimer = null;
  async function poll() {
    let next = state.pollEvery;
    try {
      const r = await fetch(api + 'status', { headers: { 'Accept': 'application/json' }, cache: 'no-store' });
      if (r.ok) {
        const s = await r.json();
        state.status = s;
        state.skew = Date.parse(s.now) - Date.now();
        state.heartbeatEvery = s.heartbeat_interval_seconds || 30;
        state.pollEvery = next = s.poll_interval_seconds || 5;
        if (s.status === 'running') {
          if (state.stopped) {
            // Running again (this tab's "Start again", or another tab's): a fresh IDE, without the IDE's dialog.
            location.reload();
            return;
          }
          if (s.warning && s.stop_at) showWarning(s); else hideWarning();
        } else {
          // Stopped (or stopping): say why over the IDE and offer to start again; the tab stays where it is.
          state.stopped = true;
          showStopped(s);
          if (starting) next = 1;
        }
      }
    } catch (e) { /* offline for a moment: try again */ }
    pollTimer = setTimeout(poll, next * 1000);
  }
  poll();
})();
