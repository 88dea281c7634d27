// One run, live: its status, a card per node, pending interrupts with a Resume form, the final output or
// error, and Cancel. Built from the run's event stream (replayed from the start, then followed).

import {get, post, seg} from "./api.js";
import {badge, errorLine, fill, h, jsonBlock, link, notify, showError, when} from "./dom.js";
import {SchemaForm} from "./form.js";
import {NodeCard} from "./node_card.js";
import {follow} from "./sse.js";

const CANCELLABLE = new Set(["pending", "running", "interrupted"]);
const STATUS_OF = {"run.started": "running", "run.resumed": "running", "run.interrupted": "interrupted",
                   "run.completed": "completed", "run.failed": "failed", "run.cancelled": "cancelled"};
const CONNECTION = {connecting: "connecting…", live: "live", reconnecting: "reconnecting…", ended: "",
                    error: "not following"};

export async function runView(view, runId, signal) {
  fill(view, h("h1", null, "Run"), h("p", {class: "muted"}, "Loading…"));
  const run = await get(`/v1/runs/${seg(runId)}`);
  const page = new RunPage(view, run);
  try {
    await follow(`/v1/runs/${seg(runId)}/events`, {signal, onEvent: (e) => page.apply(e),
                                                   onStatus: (s) => page.connection(s)});
  } catch (error) {
    showError(error, "Following the run's events");
  }
}

class RunPage {
  constructor(view, run) {
    this.run = run;
    this.cards = new Map();
    this.waiting = new Map(); // interrupt path -> its panel
    this.count = 0;
    this.status = h("span", {class: "run-status"});
    this.live = h("span", {class: "connection muted", "aria-live": "polite"});
    this.events = h("span", {class: "event-count muted"});
    this.cancel = h("button", {type: "button", class: "danger", onclick: () => this.cancelRun()}, "Cancel");
    this.interrupts = h("div", {class: "interrupts"});
    this.outcome = h("div", {class: "outcome"});
    this.nodes = h("div", {class: "nodes"}, h("p", {class: "muted placeholder"}, "No node has started yet."));
    this.root = h("div", {class: "run-view", "data-run": run.run_id},
      h("div", {class: "crumbs"}, link(["runs"], "Runs"), " / "),
      h("div", {class: "title-row"},
        h("h1", null, "Run ", h("span", {class: "mono run-id"}, run.run_id)),
        h("div", {class: "run-actions"}, this.status, this.live, this.cancel)),
      h("p", {class: "meta muted"}, "workflow ", link(["workflows", run.workflow], run.workflow),
        ` v${run.version} · created ${when(run.created_at)} · `, this.events),
      h("details", {class: "panel input"}, h("summary", null, "Input"), jsonBlock(run.input)),
      this.interrupts, this.outcome,
      h("section", {class: "panel"}, h("h2", null, "Nodes"), this.nodes));
    fill(view, this.root);
    this.setStatus(run.status);
    this.showCount();
  }

  setStatus(status) {
    this.root.dataset.status = status;
    fill(this.status, badge(status));
    this.cancel.hidden = !CANCELLABLE.has(status);
  }

  connection(state) {
    this.live.textContent = CONNECTION[state] ?? state;
    this.live.dataset.state = state;
  }

  showCount() {
    this.events.textContent = `${this.count} event${this.count === 1 ? "" : "s"}`;
  }

  apply(event) {
    this.count += 1;
    this.root.dataset.lastSeq = String(event.seq);
    this.showCount();
    if (STATUS_OF[event.event]) this.setStatus(STATUS_OF[event.event]);
    if (event.node) this.card(event.node)?.apply(event);
    switch (event.event) {
      case "run.interrupted":
        this.askFor(event);
        break;
      case "run.resumed":
        this.waiting.get(event.node)?.remove();
        this.waiting.delete(event.node);
        break;
      case "run.completed":
        this.finish(h("section", {class: "panel outcome-completed"}, h("h2", null, "Output"),
                      jsonBlock(event.output, "json run-output")));
        break;
      case "run.failed":
        this.finish(h("section", {class: "panel outcome-failed"}, h("h2", null, "Failed"),
                      h("pre", {class: "error-text run-error"}, errorLine(event))));
        break;
      case "run.cancelled":
        this.finish(h("section", {class: "panel outcome-cancelled"}, h("h2", null, "Cancelled"),
                      h("p", {class: "run-error"}, event.reason || "cancelled")));
        break;
    }
  }

  /** The card of a node path; an approval's path (`agent@approve:call`) belongs to its agent's card. */
  card(path) {
    if (path.includes("@") && !this.cards.has(path)) path = path.slice(0, path.indexOf("@"));
    let card = this.cards.get(path);
    if (!card) {
      if (this.cards.size === 0) this.nodes.replaceChildren();
      card = new NodeCard(path);
      this.cards.set(path, card);
      this.nodes.append(card.element);
    }
    return card;
  }

  finish(panel) {
    for (const card of this.cards.values()) card.stop();
    for (const waiting of this.waiting.values()) waiting.remove();
    this.waiting.clear();
    fill(this.outcome, panel);
  }

  askFor(event) {
    this.waiting.get(event.node)?.remove();
    const form = new SchemaForm(event.value_schema, {label: "value"});
    const resume = h("button", {type: "submit", class: "primary"}, "Resume");
    const submit = async (e) => {
      e.preventDefault();
      let value;
      try {
        value = form.value();
      } catch (error) {
        showError(error, "Not sent");
        return;
      }
      resume.disabled = true;
      try {
        await post(`/v1/runs/${seg(this.run.run_id)}/resume`, {value, node: event.node});
        resume.textContent = "Resuming…";
      } catch (error) {
        resume.disabled = false;
        showError(error, "Resume refused");
      }
    };
    const panel = h("section", {class: "panel interrupt", "data-interrupt": event.node},
      h("h2", null, "Waiting for input ", h("span", {class: "muted mono"}, event.node)),
      h("p", {class: "prompt"}, event.prompt || "This run waits for a value."),
      h("form", {onsubmit: submit, novalidate: true}, form.element, h("div", {class: "actions"}, resume)));
    this.waiting.set(event.node, panel);
    this.interrupts.append(panel);
  }

  async cancelRun() {
    this.cancel.disabled = true;
    try {
      await post(`/v1/runs/${seg(this.run.run_id)}/cancel`, {reason: "cancelled from the web UI"});
      notify("Run cancelled.", "info");
    } catch (error) {
      showError(error, "Cancel refused");
    } finally {
      this.cancel.disabled = false;
    }
  }
}
