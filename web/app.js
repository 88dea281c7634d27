// The agentflow web UI: a hash router over three views (workflows, runs, one run), the API key field
// and the message area. Plain ES modules, no build step; everything talks to the JSON API.
//
//   #/workflows            the workflows            #/workflows/<name>   one, with its input form
//   #/runs[?status=...]    the runs, newest first   #/runs/<run_id>      one run, live

import {storedKey, storeKey, whenKeyNeeded} from "./api.js";
import {clearMessages, fill, h, messageArea, notify, showError} from "./dom.js";
import {InputError} from "./form.js";
import {runView} from "./run_view.js";
import {runList} from "./runs.js";
import {workflowDetail, workflowList} from "./workflows.js";

const view = document.getElementById("view");
messageArea(document.getElementById("messages"));

// ---- the API key ---------------------------------------------------------------------------------

const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("api-key");
let keyMessage = null;
keyInput.value = storedKey();

whenKeyNeeded((message) => {
  keyForm.classList.add("needed");
  if (!keyMessage || !keyMessage.isConnected) {
    keyMessage = notify(`This server needs an API key (${message}). Enter it in the field at the top.`, "warn");
  }
  keyInput.focus();
});

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  keyForm.classList.remove("needed");
  keyMessage?.remove();
  keyMessage = null;
  if (storeKey(keyInput.value.trim()) === 0) show(); // no call was waiting for it: reload the view with it
});

// ---- routing -------------------------------------------------------------------------------------

let current = null; // the AbortController of the view on screen

function parse(hash) {
  const [path, query = ""] = hash.replace(/^#\/?/, "").split("?");
  const parts = path.split("/").filter(Boolean).map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  });
  return {parts, params: new URLSearchParams(query)};
}

async function show() {
  current?.abort();
  const controller = current = new AbortController();
  clearMessages();
  const {parts, params} = parse(location.hash);
  const [section, id] = parts;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.section === section);
  const pane = h("div", {class: "pane"}); // a view still loading when another is chosen renders off screen
  fill(view, pane);
  try {
    if (section === "runs" && id) await runView(pane, id, controller.signal);
    else if (section === "runs") await runList(pane, params);
    else if (section === "workflows" && id) await workflowDetail(pane, id);
    else if (!section || section === "workflows") await workflowList(pane);
    else fill(pane, h("h1", null, "Not found"), h("p", null, "No such page. ", h("a", {href: "#/workflows"}, "Workflows")));
  } catch (error) {
    if (controller.signal.aborted) return;
    fill(pane);
    showError(error);
  }
}

window.addEventListener("hashchange", show);
window.addEventListener("unhandledrejection", (event) => {
  if (event.reason instanceof InputError || event.reason?.name === "ApiError") {
    showError(event.reason);
    event.preventDefault();
  }
});
if (!location.hash) history.replaceState(null, "", "#/workflows");
show();
