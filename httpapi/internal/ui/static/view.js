import { call, parseData, streamPath, url } from "./api.js";
import { $, el, idTime } from "./dom.js";
import { follow } from "./sse.js";

const FIRST = 50; // events the view opens with
const PAGE = 100; // events "Load older" adds, at least
const MAX_LAST = 10000; // the most the history endpoint's last= reaches back

const RESETS = {
  trimmed: "retention removed events this view had not received",
  deleted: "the stream was deleted; what is published to it now is a new stream",
  unknown: "this server does not know the last event this view received (another server, or an older copy of the database)",
};

// The stream view: the newest events first, live from the SSE stream, with
// older ones paged in below from the history endpoint. Rows are built by
// el(), which sets text only.
let name = "";
let feed = null;
let oldest = ""; // the id of the oldest event shown
let held = 0; // events shown (resets not counted)
let onAuth = () => {};
const types = new Set();

const list = () => $("events");
const filter = () => $("type-filter").value;
const show = (row) => { row.hidden = row.classList.contains("event") && filter() !== "" && row.dataset.type !== filter(); };
const status = (text) => { $("live").textContent = text; };

function eventRow(id, type, data) {
  const time = idTime(id);
  if (!types.has(type)) {
    types.add(type);
    $("type-filter").append(el("option", { value: type }, type));
  }
  const row = el("li", { class: "event", "data-id": id, "data-type": type },
    el("time", { datetime: time, title: id }, time.replace("T", " ").replace("Z", "")),
    el("span", { class: "type" }, type),
    el("code", { class: "data" }, data));
  show(row);
  return row;
}

function resetRow(id, data) {
  let reset = {};
  try {
    reset = JSON.parse(data);
  } catch {
    // shown with its reason unknown
  }
  const why = Object.hasOwn(RESETS, reset.reason) ? RESETS[reset.reason] : "events are missing here";
  const text = `Reset (${reset.reason || "?"}): ${why}` +
    (reset.oldest_id ? `; the stream goes on from ${reset.oldest_id}.` : ".");
  return el("li", { class: "reset", role: "alert", "data-id": id }, text);
}

function received(e) {
  if (e.type === "reset") {
    list().prepend(resetRow(e.id, e.data));
    return;
  }
  let data = e.data;
  try {
    data = JSON.stringify(parseData(data));
  } catch {
    // shown as it came
  }
  list().prepend(eventRow(e.id, e.type, data));
  held++;
  if (!oldest) {
    oldest = e.id;
    $("older").disabled = false;
  }
}

function connect(lastId) {
  feed = follow(url(streamPath(name, `/events?last=${FIRST}`)), {
    open: () => status("live"),
    event: received,
    retry: (err, ms) => status(`reconnecting in ${(ms / 1000).toFixed(1)} s` + (err ? ` (${err.message})` : "")),
    fail: (err) => {
      status(`stopped: ${err.message}`);
      if (err.status === 401) onAuth(err.message);
    },
  }, lastId);
}

// open shows the stream: its newest events, then live.
export function open(stream, auth) {
  close();
  name = stream;
  onAuth = auth;
  $("view-name").textContent = stream;
  $("view").hidden = false;
  $("older").disabled = true;
  $("older-note").textContent = "";
  status("connecting");
  connect("");
}

// resume reconnects after a new token, from the last event received.
export function resume() {
  if (!feed) return;
  const lastId = feed.lastId;
  feed.close();
  status("connecting");
  connect(lastId);
}

export function close() {
  if (feed) feed.close();
  feed = null;
  name = oldest = "";
  held = 0;
  types.clear();
  list().replaceChildren();
  $("type-filter").replaceChildren(el("option", { value: "" }, "all types"));
  $("view").hidden = true;
}

export function applyFilter() {
  for (const row of list().children) show(row);
}

// before returns the events older than id among the newest n, reading
// forward from there page by page.
async function before(id, n) {
  const out = [];
  let query = `last=${n}&limit=1000`;
  for (;;) {
    const page = await call(streamPath(name, "/history?" + query), { raw: true });
    if (page.gap) return before(id, n); // trimmed under the walk: again
    for (const e of page.events) {
      if (e.id >= id) return out; // ULIDs sort as their text does
      out.push(e);
    }
    if (page.events.length === 0) return out;
    query = `after=${page.events.at(-1).id}&limit=1000`;
  }
}

// loadOlder adds the events before the oldest shown: the newest n of the
// stream, for an n that reaches past what is shown, up to 10,000.
export async function loadOlder() {
  const button = $("older");
  const note = (text) => { $("older-note").textContent = text; };
  const stream = name;
  button.disabled = true;
  note("loading…");
  try {
    const info = await call(streamPath(stream));
    if (stream !== name) return;
    if (!info.count || info.first_id >= oldest) {
      note("no older events");
      return;
    }
    for (let n = held + PAGE; ; n = Math.min(2 * n, MAX_LAST)) {
      const older = await before(oldest, Math.min(n, MAX_LAST));
      if (stream !== name) return;
      if (older.length > 0) {
        oldest = older[0].id;
        held += older.length;
        for (const e of older.reverse()) list().append(eventRow(e.id, e.type, JSON.stringify(e.data)));
        note("");
        button.disabled = false;
        return;
      }
      if (n >= MAX_LAST) {
        note("older events are beyond the newest 10,000: use the history API");
        return;
      }
    }
  } catch (err) {
    if (stream !== name) return;
    note(err.message);
    button.disabled = false;
    if (err.status === 401) onAuth(err.message);
  }
}
