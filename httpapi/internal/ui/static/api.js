// The API as this page calls it. Paths are relative to the page (/ui/ is
// beside /v1/), so a proxy may serve both under a prefix. With a token in
// sessionStorage every request carries it as Authorization: Bearer,
// including the event stream, which is read with fetch (sse.js).

const KEY = "sselog.token";
const base = new URL("../v1/", location.href);

export const token = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (t) => sessionStorage.setItem(KEY, t),
  clear: () => sessionStorage.removeItem(KEY),
};

// APIError is an answer other than 2xx, with the server's JSON message.
export class APIError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export const url = (path) => new URL(path, base);
export const streamPath = (name, rest = "") => "streams/" + encodeURIComponent(name) + rest;

export function headers(extra = {}) {
  const h = new Headers(extra);
  const t = token.get();
  if (t) h.set("Authorization", "Bearer " + t);
  return h;
}

export async function failure(resp) {
  let msg = resp.statusText;
  try {
    msg = (await resp.json()).error || msg;
  } catch {
    // not JSON: keep the status text
  }
  return new APIError(resp.status, `${resp.status}: ${msg}`);
}

// parseData parses JSON keeping every number as written (JSON.rawJSON,
// where the browser has it), so that event data such as 9007199254740993
// or 1.50 is shown as it was stored, not as a double rounds it.
export const parseData = (text) =>
  JSON.parse(text, (key, value, ctx) => (typeof value === "number" && JSON.rawJSON && ctx ? JSON.rawJSON(ctx.source) : value));

// call sends one request; a body is sent as JSON. The answer is parsed
// with parseData when raw is set (it holds event data), else plainly.
export async function call(path, { method = "GET", body, raw = false } = {}) {
  const init = { method, headers: headers() };
  if (body !== undefined) {
    init.headers.set("Content-Type", "application/json");
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(url(path), init);
  if (!resp.ok) throw await failure(resp);
  const text = await resp.text();
  return raw ? parseData(text) : JSON.parse(text);
}
