import { call, parseData, streamPath, token } from "./api.js";
import { $, el, formatBytes } from "./dom.js";
import * as view from "./view.js";

const ZERO = "00000000000000000000000000";
let needToken = false;

function say(text) { $("status").textContent = text; }

// askToken shows the token form; the server said why (no token, expired).
function askToken(reason) {
  needToken = true;
  $("token-reason").textContent = reason;
  const form = $("token-form");
  if (form.hidden) {
    form.hidden = false;
    $("token").focus();
  }
}

function failed(err) {
  if (err.status === 401) askToken(err.message);
  else say(err.message);
}

async function refresh() {
  try {
    const { streams } = await call("streams");
    $("stream-rows").replaceChildren(...streams.map((s) => el("tr", { "data-stream": s.name },
      el("th", { scope: "row" }, el("a", { href: "#stream=" + encodeURIComponent(s.name) }, s.name)),
      el("td", { class: "num" }, s.count.toLocaleString("en")),
      el("td", { class: "num" }, formatBytes(s.bytes)),
      el("td", {}, s.count ? el("code", {}, s.first_id) : "–"),
      el("td", {}, s.count ? el("code", {}, s.last_id) : "–"),
      el("td", {}, s.low_water === ZERO ? "none" : el("code", {}, s.low_water)))));
    $("no-streams").hidden = streams.length > 0;
    say("");
  } catch (err) {
    failed(err);
  }
}

// route opens the stream the address names (#stream=NAME), or none.
function route() {
  const name = new URLSearchParams(location.hash.slice(1)).get("stream");
  if (!name) {
    view.close();
    document.title = "sselog";
    return;
  }
  view.open(name, askToken);
  $("publish-form").elements.stream.value = name;
  document.title = name + " · sselog";
}

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  token.set($("token").value.trim());
  $("token").value = "";
  $("token-form").hidden = true;
  $("forget-token").hidden = false;
  needToken = false;
  refresh();
  view.resume();
});

$("forget-token").addEventListener("click", () => {
  token.clear();
  $("forget-token").hidden = true;
  refresh();
  view.resume();
});

$("publish-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const form = e.target.elements;
  const result = $("publish-result");
  const event = {};
  if (form.type.value !== "") event.type = form.type.value;
  if (form.format.value === "json") {
    try {
      event.data = parseData(form.data.value);
    } catch (err) {
      result.textContent = "The data is not JSON: " + err.message;
      return;
    }
  } else {
    event.data = form.data.value;
  }
  try {
    const { id } = await call(streamPath(form.stream.value, "/events"), { method: "POST", body: event });
    result.textContent = "Stored as " + id + ".";
    refresh();
  } catch (err) {
    result.textContent = "Not stored: " + err.message;
    if (err.status === 401) askToken(err.message);
  }
});

$("refresh").addEventListener("click", refresh);
$("older").addEventListener("click", view.loadOlder);
$("type-filter").addEventListener("change", view.applyFilter);
window.addEventListener("hashchange", route);
setInterval(() => { if (!needToken && !document.hidden) refresh(); }, 5000);

$("forget-token").hidden = token.get() === "";
refresh();
route();
