// Following a run's events: fetch with a streamed body (so the Authorization header can be sent, which
// EventSource cannot do), our own text/event-stream parser, and reconnection with Last-Event-ID so a
// dropped connection misses nothing and repeats nothing.

import {ApiError, apiUrl, askForKey, errorOf, headers} from "./api.js";

export const TERMINAL = new Set(["run.completed", "run.failed", "run.cancelled"]);

/** The text/event-stream format, fed in chunks of text: calls onEvent({id, event, data}) per event. */
export class SSEParser {
  constructor(onEvent) {
    this.onEvent = onEvent;
    this.buffer = "";
    this.scanned = 0; // how much of the buffer holds no line break
    this.data = [];
    this.event = "";
    this.lastId = "";
  }

  feed(text) {
    // Lines end at "\r\n", "\r" or "\n". One regex pass over what is new: searching the rest of the
    // buffer for each kind of break at every line would cost the square of a chunk's size.
    const buffer = this.buffer + text;
    const breaks = /\r\n?|\n/g;
    breaks.lastIndex = this.scanned;
    let start = 0;
    let match;
    while ((match = breaks.exec(buffer)) !== null) {
      if (match[0] === "\r" && match.index === buffer.length - 1) break; // its "\n" may come next chunk
      this.line(buffer.slice(start, match.index));
      start = breaks.lastIndex;
    }
    this.buffer = buffer.slice(start);
    // a line still open: the next chunk is searched from where this one ended (a trailing "\r" again)
    this.scanned = Math.max(0, this.buffer.length - (this.buffer.endsWith("\r") ? 1 : 0));
  }

  /** The stream ended: an event without its blank line is dropped, as the format says. */
  end() {
    this.buffer = "";
    this.scanned = 0;
    this.data = [];
    this.event = "";
  }

  line(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return; // a comment: the server's heartbeat
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "data") this.data.push(value);
    else if (field === "event") this.event = value;
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
    // "retry" and unknown fields: ignored (we pace reconnections ourselves)
  }

  dispatch() {
    if (this.data.length === 0) {
      this.event = "";
      return;
    }
    const message = {id: this.lastId, event: this.event || "message", data: this.data.join("\n")};
    this.data = [];
    this.event = "";
    this.onEvent(message);
  }
}

const STALL_MS = 60_000; // no byte (not even a heartbeat) for this long: the connection is dead

/**
 * Follow `path` (a run's events URL) from after `lastSeq`, calling onEvent(event) once per event in
 * seq order, and onStatus(state) as the connection goes: connecting, live, reconnecting, ended, error.
 * Resolves after a terminal event or when `signal` aborts; rejects on an API error other than 401
 * (a run that does not exist, say). Reconnects after a dropped connection with Last-Event-ID.
 */
export async function follow(path, {lastSeq = 0, onEvent, onStatus = () => {}, signal}) {
  let seq = lastSeq;
  let pause = 250;
  while (!signal.aborted) {
    onStatus(seq > lastSeq || pause > 250 ? "reconnecting" : "connecting");
    let ended = false;
    const attempt = new AbortController();
    const stop = () => attempt.abort();
    signal.addEventListener("abort", stop);
    let stall = null;
    const watch = () => {
      clearTimeout(stall);
      stall = setTimeout(stop, STALL_MS);
    };
    try {
      const request = headers({Accept: "text/event-stream"});
      if (seq > 0) request.set("Last-Event-ID", String(seq));
      watch();
      const response = await fetch(apiUrl(path), {headers: request, signal: attempt.signal, cache: "no-store"});
      if (response.status === 401) {
        clearTimeout(stall);
        await askForKey((await errorOf(response)).message);
        continue;
      }
      if (!response.ok) throw await errorOf(response);
      onStatus("live");
      pause = 250;
      const parser = new SSEParser((message) => {
        let event;
        try {
          event = JSON.parse(message.data);
        } catch {
          return; // not one of ours
        }
        const n = Number(event.seq ?? message.id);
        if (!(n > seq)) return; // seen already (a replay overlapping what we had)
        seq = n;
        onEvent(event);
        if (TERMINAL.has(event.event)) ended = true;
      });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      while (!ended) {
        const {value, done} = await reader.read();
        if (done) break;
        watch();
        parser.feed(value);
      }
      parser.end();
      if (ended) reader.cancel().catch(() => {});
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status !== 429 && error.status < 500) {
        onStatus("error");
        throw error;
      }
      // a network error, a stall, a 5xx: try again
    } finally {
      clearTimeout(stall);
      signal.removeEventListener("abort", stop);
    }
    if (ended) {
      onStatus("ended");
      return;
    }
    if (signal.aborted) return;
    onStatus("reconnecting");
    await sleep(pause, signal);
    pause = Math.min(pause * 2, 8000);
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    }, {once: true});
  });
}
