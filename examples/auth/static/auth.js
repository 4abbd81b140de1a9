// auth.js: a page's side of the two ways to authorize a stream of the auth
// demo's API, which is on another origin than the page. api is the API's
// origin, such as "https://api.example.com"; on receives what happens:
// open(), message(event), reconnecting(), failed(reason), and ended().
"use strict";

// signIn signs user in: the API sets its session cookie. credentials:
// "include" lets the cookie of another origin be stored and sent.
async function signIn(api, user) {
  const res = await fetch(`${api}/login`, {
    method: "POST", credentials: "include", body: new URLSearchParams({user}),
  });
  if (!res.ok) throw new Error(`sign-in: ${res.status}`);
}

async function signOut(api) {
  await fetch(`${api}/logout`, {method: "POST", credentials: "include"});
}

// mintToken asks the API for a token for user's stream, with the session
// cookie: {token, expires}, expires in Unix seconds.
async function mintToken(api, user) {
  const res = await fetch(`${api}/users/${encodeURIComponent(user)}/token`, {
    method: "POST", credentials: "include",
  });
  if (!res.ok) throw new Error(`token: ${res.status}`);
  return res.json();
}

function streamURL(api, user) {
  return `${api}/users/${encodeURIComponent(user)}/events`;
}

//readme:cookie
// followWithCookie follows user's stream with the session cookie:
// withCredentials sends it to the API's origin, which must answer with
// this page's exact origin and Access-Control-Allow-Credentials: true.
function followWithCookie(api, user, on) {
  const es = new EventSource(streamURL(api, user), {withCredentials: true});
  listen(es, on, () => on.failed("refused (no session, or not this user's stream)"));
  return {close: () => es.close()};
}
//readme:end

//readme:token
// followWithToken follows user's stream with a token in its URL, and no
// cookie. The token expires: the stream it opened ends then, and the
// browser's reconnection, with the same URL, is refused. Then, and only if
// that connection had opened, it mints a new token and resumes after the
// last event it got (lastEventId), so that nothing is missed or repeated.
function followWithToken(api, user, on) {
  let es = null, last = "", stopped = false;
  async function open() {
    let grant;
    try {
      grant = await mintToken(api, user);
    } catch (err) {
      on.failed(String(err.message || err));
      return;
    }
    if (stopped) return;
    let url = `${streamURL(api, user)}?token=${encodeURIComponent(grant.token)}`;
    if (last) url += `&lastEventId=${encodeURIComponent(last)}`;
    let opened = false;
    const current = es = new EventSource(url);
    current.addEventListener("open", () => { opened = true; });
    listen(current, on, () => {
      if (opened && !stopped) open(); // most likely expired: mint another
      else on.failed("refused");
    }, (id) => { last = id; });
  }
  open();
  return {close: () => { stopped = true; if (es) es.close(); }};
}
//readme:end

// listen passes es's events on to on. gaveUp is called when the browser
// gives up (a status other than 200); seen, if given, gets the ID of each
// event and gap, where a new connection resumes.
function listen(es, on, gaveUp, seen) {
  es.addEventListener("open", () => on.open());
  es.addEventListener("message", (e) => { if (seen) seen(e.lastEventId); on.message(e); });
  // Notifications the history no longer held: a page would reload its state.
  es.addEventListener("gap", (e) => { if (seen) seen(e.lastEventId); });
  es.addEventListener("close", () => { es.close(); on.ended(); });
  es.addEventListener("error", () => {
    if (es.readyState === EventSource.CLOSED) gaveUp();
    else on.reconnecting();
  });
}
