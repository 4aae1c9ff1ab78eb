// Models: every model with its versions (library, size, sha256, upload time, signature, lineage),
// and one version's page with its download, meta and lineage.

import { download, enc, get } from "./api.js";
import { age, bytes, errorBox, facts, h, hash, number, table, when } from "./dom.js";

const PAGE = 200;
// Meta keys a training task writes when it publishes a model (flrepo.fl.core.publishing).
const LINEAGE = ["task_id", "trained_from", "strategy", "rounds", "published_round", "final_loss", "final_metrics"];

function signature(meta) {
  if (!meta || !meta.signature) return h("span", { class: "muted" }, "unsigned");
  return h("span", { title: "models load without running code; tasks pin their sha256" }, `signed (key ${meta.key_id ?? "?"})`);
}

function versionLink(name, version) {
  return h("a", { href: `#/models/${enc(name)}/${enc(version)}` }, version);
}

function taskLink(id) {
  return id ? h("a", { href: `#/tasks/${enc(id)}` }, id) : h("span", { class: "muted" }, "—");
}

function groups(models) {
  const byName = new Map();
  for (const model of models) {
    const name = model.model_name ?? "";
    if (!byName.has(name)) byName.set(name, []);
    byName.get(name).push(model);
  }
  return [...byName.entries()].sort((a, b) => a[0].localeCompare(b[0]));
}

function modelsTable(models, filter) {
  const shown = groups(models).filter(([name]) => name.toLowerCase().includes(filter.toLowerCase()));
  const head = ["Model", "Version", "Library", "Size", "SHA-256", "Uploaded", "Signature", "Trained by task"];
  return h(
    "div",
    { class: "scroll" },
    h(
      "table",
      { id: "models-table" },
      h("caption", { class: "sr-only" }, "Models and their versions"),
      h("thead", null, h("tr", null, head.map((label) => h("th", { scope: "col" }, label)))),
      shown.map(([name, versions]) =>
        h(
          "tbody",
          { dataset: { model: name } },
          versions.map((m, i) =>
            h(
              "tr",
              null,
              i === 0 ? h("th", { scope: "rowgroup", rowspan: versions.length }, name) : null,
              h("td", null, versionLink(name, m.model_version ?? "")),
              h("td", null, m.meta?.library ?? "—"),
              h("td", { class: "num" }, bytes(m.size)),
              h("td", null, hash(m.sha256)),
              h("td", null, m.uploaded_at ? when(m.uploaded_at) : h("span", { class: "muted" }, "no file")),
              h("td", null, signature(m.meta)),
              h("td", null, taskLink(m.meta?.task_id)),
            ),
          ),
        ),
      ),
    ),
  );
}

export async function modelsView(main) {
  const { data, total } = await get("/model", { limit: PAGE });
  const models = [...data];
  const filter = h("input", { type: "search", id: "model-filter", placeholder: "model name contains…" });
  const count = h("p", { class: "muted", "aria-live": "polite" });
  const more = h("button", { type: "button" }, "Show more");
  const holder = h("div");
  const draw = () => {
    holder.replaceChildren(modelsTable(models, filter.value));
    count.textContent = `${models.length} of ${total ?? models.length} versions loaded`;
    more.hidden = total === null || models.length >= total;
  };
  filter.addEventListener("input", draw);
  more.addEventListener("click", async () => {
    const next = await get("/model", { limit: PAGE, offset: models.length });
    models.push(...next.data);
    draw();
  });
  main.replaceChildren(
    h("h1", null, "Models"),
    h("div", { class: "toolbar" }, h("label", { for: "model-filter" }, "Filter"), filter, count),
    holder,
    more,
  );
  draw();
}

function lineage(name, meta) {
  if (!meta.task_id) return h("p", { class: "muted", id: "lineage" }, "Not produced by a training task (uploaded).");
  const metrics = meta.final_metrics && typeof meta.final_metrics === "object" ? meta.final_metrics : {};
  return h(
    "div",
    { id: "lineage" },
    facts([
      ["Produced by task", h("a", { href: `#/tasks/${enc(meta.task_id)}`, id: "lineage-task" }, meta.task_id)],
      ["Trained from", meta.trained_from ? versionLink(name, meta.trained_from) : "—"],
      ["Strategy", meta.strategy ?? "—"],
      ["Rounds", number(meta.rounds)],
      meta.published_round !== undefined ? ["Published round", number(meta.published_round)] : null,
      ["Final loss", number(meta.final_loss)],
      ...Object.entries(metrics).map(([k, v]) => [`Final ${k}`, number(v)]),
    ]),
  );
}

export async function versionView(main, name, version) {
  const { data: model } = await get("/model/meta", { model_name: name, model_version: version });
  const meta = model.meta || {};
  const status = h("span", { role: "status" });
  const path = `/model/${enc(name)}/${enc(version)}`;
  const link = h("a", { href: path, class: "button", id: "download" }, "Download model file");
  link.addEventListener("click", async (event) => {
    event.preventDefault();
    status.textContent = "downloading…";
    try {
      await download(path, model.filename || `${name}-${version}`);
      status.textContent = "";
    } catch (error) {
      status.textContent = error.message;
    }
  });
  const rest = Object.entries(meta).filter(([k]) => !LINEAGE.includes(k));
  main.replaceChildren(
    h("p", null, h("a", { href: "#/models" }, "← Models")),
    h("h1", null, `${name} / ${version}`),
    h(
      "div",
      { class: "grid" },
      h(
        "section",
        { class: "card", "aria-labelledby": "file-h" },
        h("h2", { id: "file-h" }, "File"),
        facts([
          ["Library", meta.library ?? "—"],
          ["Size", bytes(model.size)],
          ["SHA-256", h("code", { class: "hash" }, model.sha256 ?? "—")],
          ["File name", model.filename ?? "—"],
          ["Uploaded", when(model.uploaded_at)],
          ["Age", age(model.created_at)],
          ["Signature", signature(meta)],
        ]),
        model.sha256 ? h("p", null, link, " ", status) : h("p", { class: "muted" }, "No file uploaded yet."),
      ),
      h("section", { class: "card", "aria-labelledby": "lineage-h" }, h("h2", { id: "lineage-h" }, "Lineage"), lineage(name, meta)),
    ),
    h("h2", null, "Meta"),
    table(
      "Model metadata",
      [{ label: "Key" }, { label: "Value" }],
      rest.map(([k, v]) => [k, typeof v === "object" ? h("code", null, JSON.stringify(v)) : String(v)]),
    ),
  );
}
