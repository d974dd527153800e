// workspaced: added by the proxy to the IDE's page (same origin, no build step).
// - Real input in the IDE (keys, pointer, wheel, focus) sends a heartbeat, at most one per interval.
//   An open tab without input sends nothing, so it does not keep the workspace alive.
// - When the idle warning starts, an overlay on top of the IDE shows a live countdown and "Keep working".
// - When the workspace stops, the tab goes to the stopped page (reason, time, files safe, start again)
//   instead of the IDE's reconnect loop.
(() => {
  if (window.__workspaced) return;
  const me = document.currentScript && document.currentScript.src;
  const base = me ? new URL('..', me).pathname : location.pathname.replace(/[^/]*$/, '');
  const api = base + '_workspaced/';
  const state = { lastInput: 0, lastSent: 0, status: null, skew: 0, heartbeatEvery: 30, pollEvery: 5 };
  window.__workspaced = state;

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

  // The overlay: a plain element with inline styles, on top of everything the IDE draws.
  let overlay = null, countdown = null, timer = null;
  function buildOverlay() {
    overlay = document.createElement('div');
    overlay.id = 'workspaced-warning';
    overlay.setAttribute('role', 'alertdialog');
    overlay.setAttribute('aria-live', 'assertive');
    overlay.style.cssText = 'position:fixed;inset:0;z-index:2147483647;display:none;align-items:center;' +
      'justify-content:center;background:rgba(0,0,0,.45);font:15px/1.5 system-ui,sans-serif';
    const box = document.createElement('div');
    box.style.cssText = 'background:#fff;color:#1d2330;max-width:28rem;margin:1rem;padding:1.5rem 1.75rem;' +
      'border-radius:12px;box-shadow:0 8px 30px rgba(0,0,0,.3)';
    const title = document.createElement('div');
    title.id = 'workspaced-warning-text';
    title.style.cssText = 'font-size:1.1rem;font-weight:600;margin-bottom:.5rem';
    countdown = document.createElement('div');
    countdown.id = 'workspaced-countdown';
    countdown.style.cssText = 'font-size:2rem;font-variant-numeric:tabular-nums;margin:.5rem 0 1rem';
    const button = document.createElement('button');
    button.id = 'workspaced-keep-working';
    button.textContent = 'Keep working';
    button.style.cssText = 'font:inherit;padding:.55rem 1.2rem;border:0;border-radius:8px;background:#2563eb;' +
      'color:#fff;cursor:pointer';
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
        if (s.status !== 'running') {
          // Stopped (or stopping): show why, and offer to start again, instead of a reconnect loop.
          location.replace(base);
          return;
        }
        if (s.warning && s.stop_at) showWarning(s); else hideWarning();
      }
    } catch (e) { /* offline for a moment: try again */ }
    setTimeout(poll, next * 1000);
  }
  poll();
})();
