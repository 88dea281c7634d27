// Runs: newest first, filtered by status, paged with the server's next_cursor ("Load more").

import {get, withQuery} from "./api.js";
import {badge, fill, h, link, showError, when} from "./dom.js";

const STATUSES = ["", "pending", "running", "interrupted", "completed", "failed", "cancelled"];
const PAGE = 25;

export async function runList(view, params) {
  const status = STATUSES.includes(params.get("status")) ? params.get("status") : "";
  const filter = h("select", {name: "status", "aria-label": "status filter",
                              onchange: () => (location.hash = filter.value ? `#/runs?status=${filter.value}` : "#/runs")},
                   STATUSES.map((s) => h("option", {value: s, selected: s === status}, s || "any status")));
  const body = h("tbody");
  const more = h("button", {type: "button", class: "load-more", hidden: true}, "Load more");
  const empty = h("p", {class: "empty", hidden: true}, status ? `No ${status} runs.` : "No runs yet.");
  fill(view, h("div", {class: "title-row"}, h("h1", null, "Runs"), h("label", {class: "filter"}, "Status ", filter)),
       h("table", {class: "table runs"},
         h("thead", null, h("tr", null, ["Run", "Workflow", "Status", "Created", "Updated"]
           .map((t) => h("th", null, t)))),
         body),
       empty, more);

  let cursor = null;
  const load = async () => {
    more.disabled = true;
    try {
      const page = await get(withQuery("/v1/runs", {status, limit: PAGE, cursor}));
      for (const run of page.data) {
        body.append(h("tr", {"data-run": run.run_id},
          h("td", {class: "mono"}, link(["runs", run.run_id], run.run_id)),
          h("td", null, link(["workflows", run.workflow], run.workflow), h("span", {class: "muted"}, ` v${run.version}`)),
          h("td", null, badge(run.status)),
          h("td", {class: "muted"}, when(run.created_at)),
          h("td", {class: "muted"}, when(run.updated_at))));
      }
      cursor = page.next_cursor;
      more.hidden = !cursor;
      empty.hidden = body.childElementCount > 0;
    } catch (error) {
      showError(error, "Loading runs");
    } finally {
      more.disabled = false;
    }
  };
  more.addEventListener("click", load);
  await load();
}
