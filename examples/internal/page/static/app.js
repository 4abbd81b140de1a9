// The demo page: a click on "Start a job" asks the server for a new job, and
// the page follows all of its jobs on one EventSource, with the library's
// browser module (/sse.js): a browser opens at most six connections to a
// site, so one per job would stall the seventh. The page at ?job=<id> (each
// job's "Watch in another tab" link) follows that job too: any number of
// tabs can watch one job, and each gets all of its events. In the cluster
// demo, the page also shows the replicas behind the proxy.
import { follow as followKeys } from './sse.js';

// jobs maps a job ID to what the page knows of that job. It is exposed, with
// snapshot, as test hooks: window.demo.snapshot() returns everything that the
// page received, as plain data.
const jobs = new Map();
window.demo = { jobs, start: startJob, startMany: startJobs, snapshot };

// conn is the page's connection, which follows every job not yet done: its
// jobs, in the order of its URL's list, and its follow() handle. Starting a
// job replaces it with one for the new list.
let conn = null;
// maxJobs is the most jobs the page follows at once: the server's bound on
// the keys of one request (sse.DefaultKeysPerRequest).
const maxJobs = 100;
// arrivals counts the events the page received, of every job: each event
// keeps its number, so that the tests can tell how the jobs interleaved.
let arrivals = 0;

const list = document.getElementById('jobs');
const template = document.getElementById('job-template');
document.getElementById('start').addEventListener('click', () => startJob());
document.getElementById('start-many').addEventListener('click', () => startJobs(8));
watchLinkedJobs();
watchCluster();

// startJob starts a job on the server and follows it. It returns the job ID.
async function startJob() {
  return (await startJobs(1))[0] ?? null;
}

// startJobs starts n jobs at once and follows them, all on the page's one
// connection. It returns the IDs of the jobs started.
async function startJobs(n) {
  const error = document.getElementById('error');
  const room = maxJobs - [...jobs.values()].filter((job) => !job.ended).length;
  const capped = room < n;
  if (capped) {
    error.textContent = `The page follows at most ${maxJobs} running jobs: wait for some to end.`;
    error.hidden = false;
    n = Math.max(room, 0);
  }
  const results = await Promise.allSettled(Array.from({ length: n }, async () => {
    const res = await fetch('jobs', { method: 'POST' });
    if (!res.ok) {
      throw new Error(`${res.status} ${res.statusText}: ${(await res.text()).trim()}`);
    }
    return (await res.json()).id;
  }));
  const ids = results.filter((r) => r.status === 'fulfilled').map((r) => r.value);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) {
    error.textContent = `Could not start a job: ${failed.reason.message}`;
    error.hidden = false;
  } else if (!capped) {
    error.hidden = true;
  }
  follow(ids);
  return ids;
}

// watchLinkedJobs follows the jobs that the page's URL names, as in
// ?job=<id>: jobs started in another tab, running or already ended.
function watchLinkedJobs() {
  const bad = [];
  const ids = [];
  for (const id of new URLSearchParams(location.search).getAll('job')) {
    if (!/^[0-9a-f]{32}$/.test(id)) {
      bad.push(id);
    } else if (!ids.includes(id)) {
      ids.push(id);
    }
  }
  const error = document.getElementById('error');
  if (bad.length > 0) {
    error.textContent = `Not a job ID: ${bad.join(', ')}`;
    error.hidden = false;
  } else if (ids.length > maxJobs) {
    error.textContent = `The page follows at most ${maxJobs} jobs: the first ${maxJobs} of the link's ${ids.length}.`;
    error.hidden = false;
  }
  ids.length = Math.min(ids.length, maxJobs);
  follow(ids);
}

// follow shows the jobs ids and follows them, with the page's other jobs
// not yet done, on a new connection.
function follow(ids) {
  const added = ids.filter((id) => !jobs.has(id));
  if (added.length === 0) return;
  for (const id of added) {
    const el = template.content.firstElementChild.cloneNode(true);
    el.querySelector('.job-number').textContent = `#${jobs.size + 1}`;
    el.querySelector('.job-id').textContent = id.slice(0, 8);
    el.querySelector('.job-id').title = id;
    const watch = el.querySelector('.watch');
    watch.href = `?job=${id}`;
    watch.title = 'Open this job in a new tab: each tab gets every event of the job';
    list.prepend(el);
    jobs.set(id, {
      id, el, conn: null, ended: false,
      progress: [], logs: [], ids: [], at: [], gaps: [],
      conns: 0, opens: 0, errors: 0, status: 'connecting',
    });
  }
  document.getElementById('empty').hidden = true;
  reconnect();
}

// reconnect replaces the page's connection with one that follows every
// job not yet ended, each from where the old connection left it: the
// server sends each job's events exactly once across the two.
function reconnect() {
  const old = conn;
  const following = [...jobs.values()].filter((job) => !job.ended);
  // The old connection's last ID names a cursor the server stored, which
  // holds each job's position by the job's key: the new list resumes from
  // it, whatever its order and the jobs added (docs/protocol.md, "A
  // changing set of keys").
  const from = old ? old.f.lastEventId : '';
  if (old) old.f.close();
  conn = null;
  if (following.length === 0) return;

  const c = {
    jobs: following,
    url: 'jobs/events?' + following.map((job) => `job=${job.id}`).join('&'),
    f: null,
  };
  conn = c;
  for (const job of following) {
    job.conn = c;
    job.conns++;
  }
  const live = () => c.jobs.filter((job) => !job.ended);
  c.f = followKeys(c.url, {
    keys: following.map((job) => job.id),
    events: ['progress', 'log'],
    // lastEventId=0 (or the old connection's last ID): the stream starts
    // at each new job's first event, and if this first connection dies
    // before any event arrives, the browser's reconnection (which then has
    // no Last-Event-ID) still does. Later reconnections send the ID of the
    // last event received, which holds every job's position, and resume
    // every job after it.
    lastEventId: from || '0',
    onOpen() {
      for (const job of live()) {
        job.opens++;
        setStatus(job, 'running');
      }
    },
    onReconnect() {
      // The browser reconnects by itself.
      for (const job of live()) {
        job.errors++;
        setStatus(job, 'reconnecting');
      }
    },
    onError() {
      // The browser gave up: the server answered with something other
      // than a stream.
      for (const job of live()) job.errors++;
      gaveUp(c, live());
    },
    onEvent(id, e) {
      const job = jobs.get(id);
      job.ids.push(entry(e.lastEventId));
      job.at.push(++arrivals);
      if (e.type === 'progress') {
        const pct = Number(e.data);
        job.progress.push(pct);
        showProgress(job, pct);
      } else {
        job.logs.push(e.data);
        log(job, e.data, false);
      }
    },
    // The server no longer holds events from and to (they are older than
    // the job's history keeps): this tab will never see them. Every
    // "progress" event carries the whole state, so the next one sets the
    // bar right (and the job's close tells that it finished, if none
    // comes); the log says what is missing.
    onGap(id, from, to) {
      const job = jobs.get(id);
      job.ids.push(entry(c.f.lastEventId));
      job.at.push(++arrivals);
      job.gaps.push({ from, to });
      const n = to - from + 1;
      log(job, `${n} earlier event${n === 1 ? ' is' : 's are'} no longer held by the server: this tab missed them.`, true);
    },
    // The job has ended and every one of its events arrived. The module
    // closes the EventSource once every job of the connection has.
    onClose(id) {
      ended(jobs.get(id));
    },
  });
}

// ended shows a job done. A job's key is closed once all of its steps are
// done: a tab that missed the last progress events shows it too.
function ended(job) {
  job.ended = true;
  if (job.gaps.length > 0) showProgress(job, 100);
  setStatus(job, 'done');
}

// entry returns an event's ID within its job. A multi-key ID is
// "<i>:~<cursor>:<j>_<entry>,…" (docs/protocol.md, "IDs"): the event's own
// job has moved, so its entry is among those after the cursor's name, at
// its position i; a one-job stream's ID is the entry itself.
function entry(id) {
  const colon = id.indexOf(':');
  if (colon < 0) return id;
  const i = id.slice(0, colon);
  const rest = id.slice(colon + 1);
  if (!rest.startsWith('~')) return rest.split(',')[Number(i)];
  const moved = rest.slice(rest.indexOf(':') + 1).split(',');
  const mine = moved.find((m) => m.slice(0, m.indexOf('_')) === i);
  return mine === undefined ? '' : mine.slice(mine.indexOf('_') + 1);
}

// gaveUp handles a connection whose EventSource will not reconnect, with
// its jobs not ended. A 204 means that every one of them has ended and that
// this tab has all of their events, which a connection lost between the
// last event and the end of the stream can lead to; the EventSource cannot
// tell a 204 from a failure, so the page asks again itself.
async function gaveUp(c, left) {
  let status = 0;
  const last = c.f.lastEventId;
  if (last !== '' && last !== '0') {
    const ctl = new AbortController();
    try {
      const res = await fetch(c.url, {
        headers: { 'Last-Event-ID': last },
        cache: 'no-store',
        signal: ctl.signal,
      });
      status = res.status;
    } catch {
      // The server is unreachable.
    } finally {
      ctl.abort(); // a 200 is a stream: do not read it
    }
  }
  for (const job of left) {
    if (status === 204) {
      ended(job);
      continue;
    }
    job.ended = true; // not followed any more
    setStatus(job, 'failed');
    const which = left.length === 1 ? 'the job is' : 'one of the jobs is';
    log(job, job.opens === 0
      ? `The connection failed: the server is unreachable, or ${which} unknown or ended too long ago.`
      : 'The connection failed.', true);
  }
}

// watchCluster shows the replicas of the cluster demo, whose proxy answers
// GET cluster with their state and which replica serves each job's stream,
// and polls it twice a second. The progress demo answers 404: nothing to
// show.
async function watchCluster() {
  let shown = '';
  for (;;) {
    try {
      const res = await fetch('cluster', { cache: 'no-store' });
      if (res.status === 404) return;
      const text = await res.text();
      if (res.ok && text !== shown) {
        shown = text;
        showCluster(JSON.parse(text));
      }
    } catch {
      // The proxy is unreachable: try again.
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
}

// showCluster shows each replica with a button that stops or starts it,
// and on each job the replica that serves its stream.
function showCluster({ replicas, streams }) {
  const panel = document.getElementById('cluster');
  panel.hidden = false;
  panel.querySelector('.replicas').replaceChildren(...replicas.map((r) => {
    const li = document.createElement('li');
    li.dataset.up = String(r.up);
    const name = document.createElement('strong');
    name.textContent = `Replica ${r.name}`;
    const state = document.createElement('span');
    state.textContent = r.up ? `up, ${r.streams} stream${r.streams === 1 ? '' : 's'}` : 'stopped';
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = r.up ? 'Stop' : 'Start';
    button.addEventListener('click', () => {
      fetch(`cluster/${r.name}/${r.up ? 'stop' : 'start'}`, { method: 'POST' });
    });
    li.append(name, state, button);
    return li;
  }));
  // A job's stream is open on at most one replica; between two, and once
  // the job has ended, the page shows the last one.
  for (const job of jobs.values()) {
    const by = streams[job.id];
    if (by) {
      const served = job.el.querySelector('.served');
      served.hidden = false;
      served.textContent = `via replica ${by}`;
    }
  }
}

function setStatus(job, status) {
  job.status = status;
  job.el.dataset.status = status;
  job.el.querySelector('.status').textContent = status;
}

function showProgress(job, pct) {
  job.el.querySelector('.bar').setAttribute('aria-valuenow', String(pct));
  job.el.querySelector('.fill').style.width = `${pct}%`;
  job.el.querySelector('.percent').textContent = `${pct}%`;
}

// log appends a line to a job's log and keeps the newest line in view.
function log(job, text, note) {
  const box = job.el.querySelector('.log');
  const li = document.createElement('li');
  const time = document.createElement('time');
  time.textContent = new Date().toLocaleTimeString([], { hour12: false });
  li.append(time, text);
  if (note) li.className = 'note';
  box.append(li);
  box.scrollTop = box.scrollHeight;
}

// snapshot returns, in the order the jobs were started or opened, what the
// page received for each job and what it shows.
function snapshot() {
  return [...jobs.values()].map((job) => ({
    id: job.id,
    progress: job.progress,
    logs: job.logs,
    ids: job.ids,
    at: job.at,
    gaps: job.gaps,
    conns: job.conns,
    opens: job.opens,
    errors: job.errors,
    status: job.status,
    readyState: job.conn ? job.conn.f.eventSource.readyState : EventSource.CLOSED,
    bar: Number(job.el.querySelector('.bar').getAttribute('aria-valuenow')),
    width: job.el.querySelector('.fill').style.width,
    watch: job.el.querySelector('.watch').href,
    served: job.el.querySelector('.served').textContent,
  }));
}
