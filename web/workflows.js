// Workflows: the list, and one workflow with its input form ("Start run").

import {get, post, seg, withQuery} from "./api.js";
import {badge, fill, h, link, route, showError, when} from "./dom.js";
import {SchemaForm} from "./form.js";

export async function workflowList(view) {
  fill(view, h("h1", null, "Workflows"), h("p", {class: "muted"}, "Loading…"));
  const {data} = await get("/v1/workflows");
  const rows = data.map((w) => h("tr", {"data-workflow": w.name},
    h("td", null, link(["workflows", w.name], h("strong", null, w.name))),
    h("td", {class: "description"}, w.description || h("span", {class: "muted"}, "—")),
    h("td", {class: "num"}, `v${w.version}`),
    h("td", {class: "muted"}, w.origin),
    h("td", {class: "muted"}, when(w.created_at))));
  fill(view, h("h1", null, "Workflows"),
       data.length === 0
         ? h("p", {class: "empty"}, "No workflows yet: serve some with --workflows, or register one with "
             + "POST /v1/workflows.")
         : h("table", {class: "table workflows"},
             h("thead", null, h("tr", null, ["Name", "Description", "Version", "Origin", "Registered"]
               .map((t) => h("th", null, t)))),
             h("tbody", null, rows)));
}

export async function workflowDetail(view, name) {
  fill(view, h("h1", null, name), h("p", {class: "muted"}, "Loading…"));
  const workflow = await get(`/v1/workflows/${seg(name)}`);
  const schema = workflow.ir.input ?? {type: "object"};
  const form = new SchemaForm(schema, {label: "input"});
  const start = h("button", {type: "submit", class: "primary"}, "Start run");
  const submit = async (event) => {
    event.preventDefault();
    let input;
    try {
      input = form.value();
    } catch (error) {
      showError(error, "Not sent");
      return;
    }
    if (!input || typeof input !== "object" || Array.isArray(input)) {
      showError(new Error("the input must be a JSON object"), "Not sent");
      return;
    }
    start.disabled = true;
    try {
      const run = await post(`/v1/workflows/${seg(name)}/runs`, {input});
      location.hash = route("runs", run.run_id);
    } catch (error) {
      showError(error, "The run was not started");
    } finally {
      start.disabled = false;
    }
  };
  const recent = h("div", {class: "recent"}, h("p", {class: "muted"}, "Loading…"));
  fill(view,
       h("div", {class: "crumbs"}, link(["workflows"], "Workflows"), " / "),
       h("h1", null, workflow.name, " ", h("span", {class: "version"}, `v${workflow.version}`)),
       workflow.description ? h("p", {class: "description"}, workflow.description) : null,
       h("section", {class: "panel"},
         h("h2", null, "Input"),
         h("form", {class: "run-form", onsubmit: submit, novalidate: true}, form.element,
           h("div", {class: "actions"}, start))),
       h("section", {class: "panel"}, h("h2", null, "Recent runs"), recent),
       workflow.source ? h("details", {class: "panel source"}, h("summary", null, "YAML source"),
                           h("pre", {class: "code"}, workflow.source)) : null);
  try {
    const runs = await get(withQuery("/v1/runs", {workflow: name, limit: 10}));
    fill(recent, runs.data.length ? h("ul", {class: "run-links"}, runs.data.map((r) => h("li", null,
      link(["runs", r.run_id], r.run_id), " ", badge(r.status), " ", h("span", {class: "muted"},
        when(r.created_at))))) : h("p", {class: "muted"}, "No runs yet."));
  } catch (error) {
    fill(recent);
    showError(error, "Recent runs");
  }
}
