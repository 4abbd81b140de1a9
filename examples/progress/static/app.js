// The demo page: a click on "Start a job" asks the server for a new job and
// follows its event stream with an EventSource, one per job.
'use strict';

// jobs maps a job ID to what the page knows of that job. It is exposed, with
// snapshot, as test hooks: window.demo.snapshot() returns everything that the
// page received, as plain data.
const jobs = new Map();
window.demo = { jobs, start: startJob, snapshot };

const list = document.getElementById('jobs');
const template = document.getElementById('job-template');
document.getElementById('start').addEventListener('click', startJob);

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

// follow shows one job and updates it from its event stream at url.
function follow(id, url) {
  const el = template.content.firstElementChild.cloneNode(true);
  el.querySelector('.job-number').textContent = `#${jobs.size + 1}`;
  el.querySelector('.job-id').textContent = id.slice(0, 8);
  el.querySelector('.job-id').title = id;
  list.prepend(el);
  document.getElementById('empty').hidden = true;

  // lastEventId=0: if this first connection dies before any event arrives,
  // the browser's reconnection (which then has no Last-Event-ID) still gets
  // every event from the first.
  const es = new EventSource(url + '?lastEventId=0');
  const job = { id, es, el, progress: [], logs: [], opens: 0, errors: 0, status: 'connecting' };
  jobs.set(id, job);

  es.addEventListener('open', () => {
    job.opens++;
    setStatus(job, 'running');
  });
  es.addEventListener('error', () => {
    // The browser reconnects by itself unless it gave up (readyState CLOSED).
    job.errors++;
    if (es.readyState === EventSource.CLOSED) {
      setStatus(job, 'failed');
      log(job, 'The connection failed.', true);
    } else {
      setStatus(job, 'reconnecting');
    }
  });
  es.addEventListener('progress', (e) => {
    const pct = Number(e.data);
    job.progress.push(pct);
    el.querySelector('.bar').setAttribute('aria-valuenow', String(pct));
    el.querySelector('.fill').style.width = `${pct}%`;
    el.querySelector('.percent').textContent = `${pct}%`;
  });
  es.addEventListener('log', (e) => {
    job.logs.push(e.data);
    log(job, e.data, false);
  });
  // The server ends a finished job's stream with an event "close". Without
  // es.close() the browser would reconnect.
  es.addEventListener('close', () => {
    es.close();
    setStatus(job, 'done');
  });
}

function setStatus(job, status) {
  job.status = status;
  job.el.dataset.status = status;
  job.el.querySelector('.status').textContent = status;
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

// snapshot returns, in the order the jobs were started, what the page
// received for each job and what it shows.
function snapshot() {
  return [...jobs.values()].map((job) => ({
    id: job.id,
    progress: job.progress,
    logs: job.logs,
    opens: job.opens,
    errors: job.errors,
    status: job.status,
    readyState: job.es.readyState,
    bar: Number(job.el.querySelector('.bar').getAttribute('aria-valuenow')),
    width: job.el.querySelector('.fill').style.width,
  }));
}
