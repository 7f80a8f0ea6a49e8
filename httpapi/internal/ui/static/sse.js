import { failure, headers } from "./api.js";

// follow reads the SSE stream at url as EventSource does: the WHATWG
// parsing rules, reconnection after the server's retry hint, and
// Last-Event-ID on every reconnection (the server lets that header win
// over a start in the query, so url's ?last=50 counts only the first
// time). It reads with fetch because EventSource hands an event of type T
// only to a listener added for T, and a viewer cannot know a stream's
// types ahead: the events of any other type would be skipped, and resumed
// past. It also lets the token go in the Authorization header rather than
// the URL.
//
// on.open(), on.event({id, type, data}), on.retry(error, ms) before each
// reconnection, on.fail(error) when the server refuses the stream (4xx;
// no reconnection). close() stops it. lastId starts a resume.
export function follow(url, on, lastId = "") {
  const stop = new AbortController();
  let retry = 3000;
  const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

  async function read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "", id = lastId, type = "", data = [];
    const line = (text) => {
      if (text === "") {
        lastId = id;
        // A read already in hand when close() ran must not reach the
        // next view.
        if (data.length > 0 && !stop.signal.aborted) on.event({ id, type: type || "message", data: data.join("\n") });
        type = "";
        data = [];
        return;
      }
      if (text[0] === ":") return;
      const colon = text.indexOf(":");
      const field = colon < 0 ? text : text.slice(0, colon);
      let value = colon < 0 ? "" : text.slice(colon + 1);
      if (value[0] === " ") value = value.slice(1);
      if (field === "data") data.push(value);
      else if (field === "event") type = value;
      else if (field === "id" && !value.includes("\0")) id = value;
      else if (field === "retry" && /^[0-9]+$/.test(value)) retry = Number(value);
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return; // an event cut short is dropped, as the rules say
      buf += value;
      let start = 0;
      for (let i = 0; i < buf.length; i++) {
        const c = buf[i];
        if (c !== "\n" && c !== "\r") continue;
        if (c === "\r" && i + 1 === buf.length) break; // maybe half a CRLF
        line(buf.slice(start, i));
        if (c === "\r" && buf[i + 1] === "\n") i++;
        start = i + 1;
      }
      buf = buf.slice(start);
    }
  }

  (async () => {
    while (!stop.signal.aborted) {
      let error = null;
      try {
        const h = headers({ Accept: "text/event-stream" });
        if (lastId) h.set("Last-Event-ID", lastId);
        const resp = await fetch(url, { headers: h, cache: "no-store", signal: stop.signal });
        if (!resp.ok || !(resp.headers.get("Content-Type") || "").startsWith("text/event-stream")) {
          error = await failure(resp);
          if (resp.status < 500) {
            on.fail(error);
            return;
          }
        } else {
          on.open();
          await read(resp.body);
        }
      } catch (err) {
        error = err; // the network, or close()
      }
      if (stop.signal.aborted) return;
      on.retry(error, retry);
      await wait(retry);
    }
  })();

  return {
    close: () => stop.abort(),
    get lastId() { return lastId; },
  };
}
