// Strategies and transformations: their files, signature state (key id, verified by the service's
// trusted keys or why not) and the tasks whose pins reference them.

import { enc, get } from "./api.js";
import { bytes, errorBox, h, hash, phase, table } from "./dom.js";

function verdict(state) {
  if (!state) return h("span", { class: "muted" }, "—");
  if (!state.signed) return h("span", { class: "badge warn", title: state.detail }, "unsigned");
  const label = state.verified ? `verified · key ${state.key_id}` : `not verified · key ${state.key_id ?? "?"}`;
  const badge = h("span", { class: `badge ${state.verified ? "ok" : "bad"}`, title: state.detail }, label);
  return state.verified ? badge : [badge, h("div", { class: "muted" }, state.detail)];
}

// The tasks that pin `name` of this kind, each saying whether its pin is the file stored now.
function pinsOf(kind, name, sha, tasks) {
  if (tasks === null) return h("span", { class: "muted" }, "loading…");
  const refs = [];
  for (const task of tasks) {
    const pins = task.pins || {};
    let pinned;
    if (kind === "strategy" && task.strategy?.strategy_name === name) pinned = pins.strategy?.sha256;
    else if (kind === "transformation") {
      const pin = (pins.transformations || []).find((p) => p.id === name);
      const used = (task.transformations || []).some((t) => t.id === name);
      if (!pin && !used) continue;
      pinned = pin?.sha256;
    } else continue;
    const same = pinned && sha && pinned === sha;
    refs.push(
      h(
        "li",
        null,
        h("a", { href: `#/tasks/${enc(task.task_id)}` }, task.task_id),
        " ",
        phase(task.phase),
        " ",
        pinned ? h("span", { class: same ? "ok" : "warn" }, same ? "pins this file" : `pins ${pinned.slice(0, 12)}… (not this file)`) : h("span", { class: "muted" }, "no pin"),
      ),
    );
  }
  return refs.length ? h("ul", { class: "pins" }, refs) : h("span", { class: "muted" }, "no task");
}

function itemsTable(kind, items, states, tasks, nameOf) {
  const byName = new Map(states.map((st) => [st.name, st]));
  return table(
    kind === "strategy" ? "Strategies" : "Transformations",
    [{ label: "Name" }, { label: "Description" }, { label: "Size", num: true }, { label: "SHA-256" }, { label: "Signature" }, { label: "Pinned by tasks" }],
    items.map((item) => {
      const name = nameOf(item);
      return {
        props: { dataset: { name } },
        cells: [
          h("strong", null, name),
          item.strategy_description ?? item.description ?? "—",
          bytes(item.size),
          hash(item.sha256),
          verdict(byName.get(name)),
          pinsOf(kind, name, item.sha256, tasks),
        ],
      };
    }),
    { id: `${kind}-table` },
  );
}

export async function codeView(main) {
  const [strategies, transformations, strategyStates, transformationStates] = await Promise.all([
    get("/strategy"),
    get("/transformation"),
    get("/signatures/strategy"),
    get("/signatures/transformation"),
  ]);
  const draw = (tasks, note) =>
    main.replaceChildren(
      h("h1", null, "Strategies & transformations"),
      h(
        "p",
        { class: "muted" },
        "Signatures are checked with the public keys the service trusts (FLREPO_TRUSTED_KEYS); collectors and local executions verify again before loading. Pins are the sha256 a task recorded when it was created.",
        note ? ` ${note}` : "",
      ),
      h("h2", { id: "strategies-h" }, `Strategies (${strategies.total ?? strategies.data.length})`),
      itemsTable("strategy", strategies.data, strategyStates.data, tasks, (s) => s.strategy_name),
      h("h2", { id: "transformations-h" }, `Transformations (${transformations.total ?? transformations.data.length})`),
      itemsTable("transformation", transformations.data, transformationStates.data, tasks, (t) => t.id),
    );
  draw(null);
  // The tasks (for their pins) after the first render: there may be many, and each is a full document.
  get("/tasks")
    .then(({ data, total }) => {
      if (main.dataset.view !== "code") return; // the user has moved on
      const note = total !== null && total > data.length ? `Pins of the first ${data.length} of ${total} tasks.` : "";
      const focused = document.activeElement && document.activeElement.id;
      draw(data, note);
      main.dataset.pins = "loaded";
      if (focused) document.getElementById(focused)?.focus();
    })
    .catch((error) => main.append(errorBox(error)));
}
