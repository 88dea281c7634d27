// One card per node path (`fetch`, `summaries[3].fetch`, `refine#2.draft`): its state and attempt, the
// LLM text as it streams (appended to one Text node, so hundreds of deltas cost no re-rendering), tool
// calls with their arguments and results, token usage, and the node's output or error.

import {duration, errorLine, h, jsonBlock, pretty} from "./dom.js";

const OPEN = new Set(["running", "waiting", "retrying"]);

export class NodeCard {
  constructor(path) {
    this.path = path;
    this.calls = new Map(); // call_id -> that call's block
    this.text = null; // the Text node LLM deltas go to (a new one after each tool call)
    this.kind = h("span", {class: "kind"});
    this.badge = h("span", {class: "badge"});
    this.attempt = h("span", {class: "attempt muted"});
    this.took = h("span", {class: "took muted"});
    this.timeline = h("div", {class: "timeline"});
    this.result = h("div", {class: "node-result"});
    const depth = path.split(/\.(?![^[]*\])/).length - 1;
    this.element = h("article", {class: `node depth-${Math.min(depth, 4)}`, "data-node": path},
                     h("header", null, h("span", {class: "path"}, path), this.kind, this.badge, this.attempt,
                       this.took),
                     this.timeline, this.result);
    this.setState("running");
  }

  get state() {
    return this.element.dataset.state;
  }

  setState(state, attempt) {
    this.element.dataset.state = state;
    this.badge.className = `badge state-${state}`;
    this.badge.textContent = state;
    if (attempt) this.attempt.textContent = attempt > 1 ? `attempt ${attempt}` : "";
  }

  /** The run ended while this node was still going (cancelled, or another node failed). */
  stop() {
    if (OPEN.has(this.state)) this.setState("stopped");
  }

  apply(event) {
    switch (event.event) {
      case "node.started":
        this.kind.textContent = event.kind;
        if ((event.attempt ?? 1) > 1) {
          this.note(`attempt ${event.attempt}`, "divider");
          this.calls.clear(); // a retry's calls reuse the first attempt's ids: they get blocks of their own
        }
        this.setState("running", event.attempt);
        break;
      case "llm.delta":
        this.appendText(event.text);
        break;
      case "llm.tool_call":
        this.call(event).requested(event);
        break;
      case "tool.call":
        this.call(event).started(event);
        break;
      case "tool.result":
        this.call(event).finished(event);
        break;
      case "llm.usage":
        this.text = null;
        this.timeline.append(h("div", {class: "usage"}, usageText(event)));
        break;
      case "node.retrying":
        this.setState("retrying", event.attempt);
        this.note(`failed: ${event.error}; retrying in ${duration(event.delay)}`, "warn");
        break;
      case "node.completed":
        this.setState("completed", event.attempt);
        this.took.textContent = duration(event.duration);
        this.result.replaceChildren(h("div", {class: "label"}, "output"), jsonBlock(event.output, "json output"));
        break;
      case "node.failed":
        this.setState(event.handled ? "failed-handled" : "failed", event.attempt);
        this.result.replaceChildren(h("div", {class: "error-text"}, errorLine(event),
                                      event.handled ? " (handled by an on_error edge)" : ""));
        break;
      case "run.interrupted":
        this.setState("waiting");
        this.note(event.prompt ? `waiting: ${event.prompt}` : "waiting for a value", "info");
        break;
      case "run.resumed":
        if (this.state === "waiting") this.setState("running");
        this.note("resumed", "info");
        break;
    }
  }

  appendText(text) {
    if (this.text === null) {
      this.text = document.createTextNode("");
      this.timeline.append(h("pre", {class: "llm-text"}, this.text));
    }
    this.text.appendData(text);
  }

  note(text, kind) {
    this.text = null;
    this.timeline.append(h("div", {class: `note ${kind}`}, text));
  }

  call(event) {
    // llm.tool_call, tool.call and tool.result of one call carry the same call_id (a tool node's is its path)
    const key = event.call_id;
    let call = this.calls.get(key);
    if (!call) {
      this.text = null;
      call = new ToolCallView(event);
      this.calls.set(key, call);
      this.timeline.append(call.element);
    }
    return call;
  }
}

function usageText(u) {
  const cached = u.cached_tokens ? ` (${u.cached_tokens} cached)` : "";
  const finish = u.finish_reason ? ` · finish: ${u.finish_reason}` : "";
  return `tokens: prompt ${u.prompt_tokens}${cached} · completion ${u.completion_tokens}${finish}`;
}

class ToolCallView {
  constructor(event) {
    this.status = h("span", {class: "badge state-running"}, "requested");
    this.flags = h("span", {class: "muted"});
    this.args = h("pre", {class: "json args"});
    this.outcome = h("div", {class: "tool-outcome"});
    this.element = h("div", {class: "tool-call", "data-call": event.call_id},
                     h("div", {class: "tool-head"}, h("span", {class: "tool-name"}, event.tool), this.status,
                       this.flags),
                     h("div", {class: "label"}, "arguments"), this.args, this.outcome);
    this.args.textContent = pretty(event.arguments);
  }

  requested(event) {
    this.args.textContent = pretty(event.arguments);
  }

  started(event) {
    this.args.textContent = pretty(event.arguments);
    this.status.textContent = "running";
    if (event.early) this.flags.textContent = "started early, while the model was still writing";
  }

  finished(event) {
    this.status.className = `badge state-${event.error ? "failed" : "completed"}`;
    this.status.textContent = event.error ? "error" : "done";
    this.flags.textContent = [this.flags.textContent, duration(event.duration)].filter(Boolean).join(" · ");
    this.outcome.replaceChildren(
      h("div", {class: "label"}, event.error ? "error" : "result"),
      event.error ? h("pre", {class: "error-text"}, event.error) : jsonBlock(event.result, "json result"));
  }
}
