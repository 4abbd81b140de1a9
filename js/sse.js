// sse.js: follow several keys of an sse.MultiHandler on one EventSource.
// Served by sse.ScriptHandler(); an ES module with no dependencies.
//
//   import { follow } from "/sse.js";
//   const f = follow("/jobs/events?job=7&job=9", {
//     keys: ["7", "9"],          // optional: report keys by these names
//     events: ["progress"],      // the application's event names
//     onEvent(key, e) {},        // e: the MessageEvent (type, data, lastEventId)
//     onGap(key, from, to) {},   // events from..to of key will never come
//     onClose(key) {},           // key is closed, every event of it received
//     onDone() {},               // every key closed; the EventSource is closed
//     onError(e) {},             // the EventSource gave up (a 4xx, 5xx, 204)
//   });
//   f.close();                   // stop following
//
// A key is reported by its position in the request's list (0, 1, …), or by
// keys[position] when keys is given. A one-key stream (sse.Handler's wire:
// "gap" and "close") is followed too, as key 0.
//
// To follow another set of keys, keeping the place in the keys kept (the
// server stores cursors: docs/protocol.md, "Cursors"), close the old one,
// then follow the new URL from its last ID:
//
//   f.close();
//   f = follow("/jobs/events?job=9&job=11", { keys: ["9", "11"], lastEventId: f.lastEventId, ... });

export function follow(url, options = {}) {
  const o = options;
  const names = o.keys;
  const keyOf = (i) => (names && i < names.length ? names[i] : i);
  let target = url;
  if (o.lastEventId) {
    target += (url.includes("?") ? "&" : "?") + "lastEventId=" + encodeURIComponent(o.lastEventId);
  }
  const es = new EventSource(target, { withCredentials: !!o.withCredentials });
  const closed = new Set(); // positions reported closed
  let done = false;
  let lastEventId = o.lastEventId || "";

  const call = (fn, ...args) => {
    if (typeof fn !== "function") return;
    try {
      fn(...args);
    } catch (err) {
      // A callback's error must not stop the other keys' events.
      setTimeout(() => { throw err; });
    }
  };
  // position returns the key position of an ID: the part before the first
  // colon, or 0 on a one-key stream.
  const position = (id) => {
    const c = id.indexOf(":");
    if (c < 0) return 0;
    const n = Number(id.slice(0, c));
    return Number.isInteger(n) && n >= 0 ? n : 0;
  };
  const json = (data) => {
    try {
      return JSON.parse(data);
    } catch {
      return {};
    }
  };
  const finish = () => {
    if (done) return;
    done = true;
    es.close();
    call(o.onDone);
  };
  const closeKey = (i) => {
    if (closed.has(i)) return;
    closed.add(i);
    call(o.onClose, keyOf(i));
  };

  for (const name of new Set(o.events && o.events.length ? o.events : ["message"])) {
    es.addEventListener(name, (e) => {
      if (done) return;
      lastEventId = e.lastEventId;
      call(o.onEvent, keyOf(position(e.lastEventId)), e);
    });
  }
  // Multi-key control events.
  es.addEventListener("sse.gap", (e) => {
    if (done) return;
    lastEventId = e.lastEventId;
    const d = json(e.data);
    call(o.onGap, keyOf(Number(d.key ?? position(e.lastEventId))), d.from, d.to);
  });
  es.addEventListener("sse.close", (e) => {
    if (done) return;
    lastEventId = e.lastEventId;
    const d = json(e.data);
    closeKey(Number(d.key ?? position(e.lastEventId)));
    // An ID of the vector form ("." for every key closed) tells that this
    // was the last key; one naming a cursor ("~") does not, and "close"
    // follows.
    const c = e.lastEventId.indexOf(":");
    const v = c >= 0 ? e.lastEventId.slice(c + 1) : "~";
    if (!v.startsWith("~") && v.split(",").every((x) => x === ".")) finish();
  });
  // One-key control events.
  es.addEventListener("gap", (e) => {
    if (done) return;
    lastEventId = e.lastEventId;
    const d = json(e.data);
    call(o.onGap, keyOf(0), d.from, d.to);
  });
  // The end of the stream: every key closed.
  es.addEventListener("close", () => {
    if (done) return;
    if (closed.size === 0) closeKey(0); // a one-key stream
    finish();
  });
  es.addEventListener("open", () => call(o.onOpen));
  es.addEventListener("error", (e) => {
    if (done) return;
    if (es.readyState === EventSource.CLOSED) {
      done = true;
      call(o.onError, e);
    } else {
      call(o.onReconnect, e); // the browser reconnects by itself
    }
  });

  return {
    eventSource: es,
    get lastEventId() { return lastEventId; },
    get done() { return done; },
    close() {
      done = true;
      es.close();
    },
  };
}
