// follow.js is the README's snippet: how a page follows one job's events,
// each once and in order across dropped connections, until the job ends.
// The e2e module runs it in Chromium against the demo's server.
"use strict";

// follow opens job id's stream. The page gives: bar (a <progress>), status
// (an element for a word of state), and reloadState, which fetches the job's
// state afresh when events were lost.
function follow(id, bar, status, reloadState) {
  //readme:follow
  // lastEventId=0: if the first connection dies before any event, the
  // browser's reconnection still starts from the beginning.
  const es = new EventSource(`/jobs/${id}/events?lastEventId=0`);
  es.addEventListener("progress", (e) => { bar.value = Number(e.data); });
  // Events the server could no longer send: rebuild the state from elsewhere.
  es.addEventListener("gap", () => reloadState());
  // The job is done and every event arrived: stop, or the browser reconnects.
  es.addEventListener("close", () => { es.close(); status.textContent = "done"; });
  es.addEventListener("error", () => {
    // CLOSED: the browser gave up (a status other than 200, or 204 for a job
    // that ended before); otherwise it is reconnecting by itself.
    status.textContent = es.readyState === EventSource.CLOSED ? "failed" : "reconnecting";
  });
  //readme:end
  return es;
}
