// The console's shell: the API key (asked once per browser session), the caller's role, and the
// views behind #/models, #/models/NAME/VERSION, #/tasks, #/tasks/ID and #/code.

import { ApiError, forgetKey, rememberKey, storedKey, whoami } from "./api.js";
import { codeView } from "./code.js";
import { errorBox, h } from "./dom.js";
import { modelsView, versionView } from "./models.js";
import { stats } from "./poll.js";
import { taskView } from "./task.js";
import { tasksView } from "./tasks.js";

const main = document.getElementById("main");
const who = document.getElementById("who");
const ctx = { role: null, keyId: null };
let stopCurrent = null;
let generation = 0;

// For tests and the curious: what the page is doing (polls made, whether polling is paused).
window.flrepoConsole = { stats, ctx };

function route() {
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const [section = "models", a, b] = parts[0] ? parts : ["models"];
  if (section === "models" && a !== undefined && b !== undefined) return { section, title: `${a} / ${b}`, view: (m) => versionView(m, a, b) };
  if (section === "tasks" && a) return { section, title: `Task ${a}`, view: (m) => taskView(m, a, ctx) };
  if (section === "tasks") return { section, title: "Tasks", view: (m) => tasksView(m) };
  if (section === "code") return { section, title: "Strategies & transformations", view: (m) => codeView(m) };
  return { section: "models", title: "Models", view: (m) => modelsView(m) };
}

function keyForm(message) {
  const input = h("input", { type: "password", id: "api-key", name: "api-key", autocomplete: "off", required: true });
  const form = h(
    "form",
    { class: "key", id: "key-form" },
    h("label", { for: "api-key" }, "API key"),
    h("p", { class: "muted" }, "Kept in this tab's session storage only and sent as the X-API-Key header; no cookie is set."),
    message ? h("p", { class: "error", role: "alert" }, message) : null,
    h("p", null, input, " ", h("button", { type: "submit", class: "primary" }, "Use this key")),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    rememberKey(input.value.trim());
    start();
  });
  main.replaceChildren(h("h1", null, "Sign in with an API key"), form);
  input.focus();
}

function header() {
  const forget = h("button", { type: "button", id: "forget-key" }, "Forget key");
  forget.addEventListener("click", () => {
    forgetKey();
    ctx.role = null;
    who.replaceChildren();
    keyForm(null);
  });
  const me = h("span", { id: "role", dataset: { role: ctx.role } }, `${ctx.keyId} · ${ctx.role}`);
  if (storedKey()) who.replaceChildren(me, forget);
  else who.replaceChildren(me); // no key needed here: nothing to forget
}

async function show() {
  const mine = ++generation;
  if (stopCurrent) stopCurrent();
  stopCurrent = null;
  const { section, title, view } = route();
  document.title = `${title} · flrepo console`;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.section === section) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  for (const name of Object.keys(main.dataset)) delete main.dataset[name]; // the last view's marks
  main.dataset.view = section;
  try {
    const stop = await view(main);
    if (mine !== generation) {
      if (stop) stop(); // the user moved on while this view loaded
      return;
    }
    stopCurrent = stop || null;
    main.dataset.rendered = String(performance.now());
  } catch (error) {
    if (mine !== generation) return;
    if (error instanceof ApiError && error.status === 401) return keyForm("That key was refused (401).");
    main.replaceChildren(h("h1", null, title), errorBox(error));
    main.dataset.rendered = String(performance.now());
  }
}

async function start() {
  const sent = storedKey();
  try {
    const me = await whoami();
    ctx.role = me.role;
    ctx.keyId = me.key_id;
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      forgetKey();
      return keyForm(sent ? "That key was refused (401)." : null);
    }
    main.replaceChildren(errorBox(error));
    return;
  }
  header();
  await show();
}

window.addEventListener("hashchange", () => {
  if (ctx.role) show().then(() => main.focus({ preventScroll: true }));
});
start();
