// Live updates by polling: one call at a time, every `interval` ms, and none while the tab is hidden
// (document.hidden); a tab shown again refreshes at once.

export const POLL_MS = Math.max(250, Number(new URLSearchParams(location.search).get("poll")) || 2000);

export const stats = { polls: 0, paused: false };

// `refresh` returns false when there is nothing more to follow (a finished task).
export function poll(refresh, interval = POLL_MS) {
  let timer = null;
  let busy = false;
  let stopped = false;

  async function tick() {
    timer = null;
    if (stopped) return;
    if (document.hidden) {
      stats.paused = true;
      return;
    }
    busy = true;
    stats.polls += 1;
    let more = true;
    try {
      more = (await refresh()) !== false;
    } catch (error) {
      console.warn("refresh failed, retrying", error);
    } finally {
      busy = false;
    }
    if (!more) stop();
    else if (!stopped && !document.hidden) timer = setTimeout(tick, interval);
    else if (document.hidden) stats.paused = true;
  }

  function visibility() {
    if (document.hidden) {
      clearTimeout(timer);
      timer = null;
      stats.paused = true;
    } else if (!stopped && !busy && timer === null) {
      stats.paused = false;
      tick();
    }
  }

  function stop() {
    stopped = true;
    clearTimeout(timer);
    document.removeEventListener("visibilitychange", visibility);
  }

  document.addEventListener("visibilitychange", visibility);
  timer = setTimeout(tick, interval);
  return stop;
}
