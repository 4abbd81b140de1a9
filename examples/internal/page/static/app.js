// The demo page: a click on "Start a job" asks the server for a new job and
// follows its event stream with an EventSource, one per job. The page at
// ?job=<id> (each job's "Watch in another tab" link) follows that job too:
// any number of tabs can watch one job, and each gets all of its events.
// In the cluster demo, the page also shows the replicas behind the proxy.
'use strict';

// jobs maps a job ID to what the page knows of that job. It is exposed, with
// snapshot, as test hooks: window.demo.snapshot() returns everything that the
// page received, as plain data.
const jobs = new Map();
window.demo = { jobs, start: startJob, snapshot };

const list = document.getElementById('jobs');
const template = document.getElementById('job-template');
document.getElementById('start').addEventListener('click', startJob);
watchLinkedJobs();
watchCluster();

// startJob starts a job on the server and follows it. It returns the job ID.
async function startJob() {
  const error = document.getElementById('error');
  try {
    const res = await fetch('jobs', { method: 'POST' });
    if (!res.ok) {
      throw new Error(`${res.status} ${res.statusText}: ${(await res.text()).trim()}`);
    }
    const { id, events } = await res.json();
    error.hidden = true;
    follow(id, events);
    return id;
  } catch (err) {
    error.textContent = `Could not start a job: ${err.message}`;
    error.hidden = false;
    return null;
  }
}

// watchLinkedJobs follows the jobs that the page's URL names, as in
// ?job=<id>: a job started in another tab, running or already ended.
function watchLinkedJobs() {
  const bad = [];
  for (const id of new URLSearchParams(location.search).getAll('job')) {
    if (!/^[0-9a-f]{32}$/.test(id)) {
      bad.push(id);
    } else if (!jobs.has(id)) {
      follow(id, `jobs/${id}/events`);
    }
  }
  if (bad.length > 0) {
    const error = document.getElementById('error');
    error.textContent = `Not a job ID: ${bad.join(', ')}`;
    error.hidden = false;
  }
}

// follow shows one job and updates it from its event stream at url.
function follow(id, url) {
  const el = template.content.firstElementChild.cloneNode(true);
  el.querySelector('.job-number').textContent = `#${jobs.size + 1}`;
  el.querySelector('.job-id').textContent = id.slice(0, 8);
  el.querySelector('.job-id').title = id;
  const watch = el.querySelector('.watch');
  watch.href = `?job=${id}`;
  watch.title = 'Open this job in a new tab: each tab gets every event of the job';
  list.prepend(el);
  document.getElementById('empty').hidden = true;

  // lastEventId=0: the stream starts at the job's first event, and if this
  // first connection dies before any event arrives, the browser's
  // reconnection (which then has no Last-Event-ID) still does. Later
  // reconnections send the ID of the last event received, and resume after
  // it.
  const es = new EventSource(url + '?lastEventId=0');
  const job = {
    id, url, es, el,
    progress: [], logs: [], ids: [], gaps: [],
    opens: 0, errors: 0, status: 'connecting',
  };
  jobs.set(id, job);

  es.addEventListener('open', () => {
    job.opens++;
    setStatus(job, 'running');
  });
  es.addEventListener('error', () => {
    // The browser reconnects by itself unless it gave up (readyState CLOSED).
    job.errors++;
    if (es.readyState === EventSource.CLOSED) {
      gaveUp(job);
    } else {
      setStatus(job, 'reconnecting');
    }
  });
  es.addEventListener('progress', (e) => {
    job.ids.push(e.lastEventId);
    const pct = Number(e.data);
    job.progress.push(pct);
    showProgress(job, pct);
  });
  es.addEventListener('log', (e) => {
    job.ids.push(e.lastEventId);
    job.logs.push(e.data);
    log(job, e.data, false);
  });
  // The server no longer holds events from and to (they are older than the
  // job's history keeps): this tab will never see them. Every "progress"
  // event carries the whole state, so the next one sets the bar right (and
  // "close" tells that the job finished, if none comes); the log says what
  // is missing.
  es.addEventListener('gap', (e) => {
    job.ids.push(e.lastEventId);
    const { from, to } = JSON.parse(e.data);
    job.gaps.push({ from, to });
    const n = to - from + 1;
    log(job, `${n} earlier event${n === 1 ? ' is' : 's are'} no longer held by the server: this tab missed them.`, true);
  });
  // The server ends a finished job's stream with an event "close". Without
  // es.close() the browser would reconnect.
  es.addEventListener('close', () => {
    es.close();
    // A job's key is closed once all of its steps are done: a tab that
    // missed the last progress events shows it too.
    if (job.gaps.length > 0) showProgress(job, 100);
    setStatus(job, 'done');
  });
}

// gaveUp handles an EventSource that will not reconnect: the server answered
// with something other than a stream. A 204 means that the job has ended and
// that this tab has all of its events, which a connection lost between the
// last event and "close" can lead to; the EventSource cannot tell a 204 from
// a failure, so the page asks again itself.
async function gaveUp(job) {
  let status = 0;
  if (job.ids.length > 0) {
    const ctl = new AbortController();
    try {
      const res = await fetch(job.url, {
        headers: { 'Last-Event-ID': job.ids[job.ids.length - 1] },
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
  if (status === 204) {
    setStatus(job, 'done');
    return;
  }
  setStatus(job, 'failed');
  log(job, job.opens === 0
    ? 'The connection failed: the server is unreachable, or the job is unknown or ended too long ago.'
    : 'The connection failed.', true);
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
    gaps: job.gaps,
    opens: job.opens,
    errors: job.errors,
    status: job.status,
    readyState: job.es.readyState,
    bar: Number(job.el.querySelector('.bar').getAttribute('aria-valuenow')),
    width: job.el.querySelector('.fill').style.width,
    watch: job.el.querySelector('.watch').href,
    served: job.el.querySelector('.served').textContent,
  }));
}
