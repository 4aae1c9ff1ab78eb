// One task, live: curves of loss and accuracy per round (aggregated, and per site where the sites'
// metrics are reported), the round table, participants and site reports, the conditions timeline,
// checkpoints with the best marked, the published model, bytes per round when recorded, and a
// Cancel button for writers. Polled while it runs and the tab is visible; no reload.

import { ApiError, ROLES, enc, get, post } from "./api.js";
import { lineChart } from "./chart.js";
import { age, bytes, facts, h, hash, number, phase, table, when } from "./dom.js";
import { poll } from "./poll.js";
import { lastReason, progress } from "./tasks.js";

const TERMINAL = ["Succeeded", "Failed"];
const FIRST = 1000; // round records asked for on the first load (the service keeps at most its setting)
const RECENT = 50; // and on each refresh, merged by round number

function isLoss(name) {
  return /loss/i.test(name);
}

function isAccuracy(name) {
  return /acc/i.test(name);
}

// Everything the page has learnt about the task so far; refreshes merge into it.
class Follow {
  constructor(id) {
    this.id = id;
    this.task = null;
    this.rounds = new Map(); // round -> record
    this.sites = new Map(); // node -> metric -> Map(round -> value)
    this.checkpoints = [];
  }

  merge(task) {
    this.task = task;
    for (const record of task.history || []) this.rounds.set(record.round, record);
    for (const p of task.participants || []) {
      if (!this.sites.has(p.node_id)) this.sites.set(p.node_id, new Map());
      const metrics = this.sites.get(p.node_id);
      for (const [name, value] of Object.entries(p.metrics || {})) {
        if (typeof value !== "number" || !p.last_round) continue;
        if (!metrics.has(name)) metrics.set(name, new Map());
        metrics.get(name).set(p.last_round, value);
      }
    }
  }

  async load(first) {
    const before = this.rounds.size;
    const { data } = await get(`/tasks/${enc(this.id)}`, { history: first ? FIRST : RECENT });
    const oldest = Math.min(...(data.history || []).map((r) => r.round));
    const newest = Math.max(0, ...this.rounds.keys());
    if (!first && before && oldest > newest + 1) return this.load(true); // missed rounds: load them all
    this.merge(data);
    this.checkpoints = (await get(`/tasks/${enc(this.id)}/checkpoints`)).data;
    return data;
  }

  records() {
    return [...this.rounds.values()].sort((a, b) => a.round - b.round);
  }

  siteSeries(test) {
    const out = [];
    for (const [node, metrics] of this.sites) {
      for (const [name, values] of metrics) {
        if (test(name)) out.push({ label: `${node} · ${name}`, points: [...values.entries()] });
      }
    }
    return out;
  }
}

function accuracyOf(record) {
  const metrics = record.metrics || {};
  const name = Object.keys(metrics).find((k) => isAccuracy(k) && typeof metrics[k] === "number");
  return name === undefined ? null : metrics[name];
}

function charts(follow) {
  const records = follow.records();
  const loss = records.filter((r) => typeof r.loss === "number").map((r) => [r.round, r.loss]);
  const accuracy = records.filter((r) => accuracyOf(r) !== null).map((r) => [r.round, accuracyOf(r)]);
  const out = [
    lineChart("Loss per round", [{ label: "aggregated", points: loss, main: true }, ...follow.siteSeries(isLoss)], "loss"),
    lineChart(
      "Accuracy per round",
      [{ label: "aggregated", points: accuracy, main: true }, ...follow.siteSeries(isAccuracy)],
      "accuracy",
    ),
  ];
  if (records.some((r) => r.bytes_up !== undefined || r.bytes_down !== undefined)) {
    const series = (field) => records.filter((r) => typeof r[field] === "number").map((r) => [r.round, r[field]]);
    out.push(
      lineChart(
        "Bytes per round",
        [
          { label: "up (sites → server)", points: series("bytes_up"), main: true },
          { label: "down (server → sites)", points: series("bytes_down") },
        ],
        "bytes",
      ),
    );
  }
  return out.map((chart) => h("div", { class: "card" }, chart));
}

function roundTable(follow) {
  const records = follow.records();
  const withBytes = records.some((r) => r.bytes_up !== undefined || r.bytes_down !== undefined);
  const names = [...new Set(records.flatMap((r) => Object.keys(r.metrics || {})))].sort();
  const columns = [
    { label: "Round", num: true },
    { label: "Loss", num: true },
    ...names.map((n) => ({ label: n, num: true })),
    { label: "Participants", num: true },
    { label: "Failures", num: true },
    { label: "Seconds", num: true },
    ...(withBytes ? [{ label: "Bytes up", num: true }, { label: "Bytes down", num: true }] : []),
  ];
  const rows = records.map((r) => ({
    props: { dataset: { round: r.round } },
    cells: [
      r.round,
      number(r.loss),
      ...names.map((n) => number((r.metrics || {})[n])),
      r.participants ?? 0,
      r.failures ?? 0,
      number(r.duration_s, 2),
      ...(withBytes ? [bytes(r.bytes_up), bytes(r.bytes_down)] : []),
    ],
  }));
  return table("Rounds", columns, rows, { id: "rounds-table" });
}

function participants(task) {
  const people = table(
    "Participants",
    [{ label: "Node" }, { label: "Samples", num: true }, { label: "Last round", num: true }, { label: "Last metrics" }],
    (task.participants || []).map((p) => [
      p.node_id,
      p.samples,
      p.last_round,
      Object.entries(p.metrics || {})
        .map(([k, v]) => `${k} ${number(v)}`)
        .join(", ") || "—",
    ]),
    { id: "participants-table" },
  );
  const reports = (task.site_reports || []).length
    ? table(
        "Site reports",
        [{ label: "Site" }, { label: "State" }, { label: "Reason" }, { label: "Message" }, { label: "When" }],
        task.site_reports.map((r) => [r.site, r.state, r.reason ?? "—", r.message ?? "—", when(r.time)]),
      )
    : h("p", { class: "muted" }, "No site reports.");
  return [people, h("h3", null, "Site reports"), reports];
}

function timeline(task) {
  const items = (task.conditions || []).map((c) =>
    h(
      "li",
      null,
      when(c.last_transition_time),
      " — ",
      h("strong", null, c.type),
      `: ${c.reason ?? ""}`,
      c.message ? h("div", { class: "muted" }, c.message) : null,
    ),
  );
  return items.length ? h("ol", { class: "timeline", id: "conditions" }, items) : h("p", { class: "muted" }, "No transitions yet.");
}

function checkpoints(follow) {
  const best = follow.task.best ? follow.task.best.round : null;
  if (!follow.checkpoints.length) return h("p", { class: "muted" }, "No checkpoints kept.");
  return table(
    "Checkpoints",
    [{ label: "Round", num: true }, { label: "Loss", num: true }, { label: "Size", num: true }, { label: "SHA-256" }, { label: "" }],
    follow.checkpoints.map((c) => ({
      props: { class: c.round === best ? "best" : null, dataset: { round: c.round } },
      cells: [c.round, number(c.loss), bytes(c.size), hash(c.sha256), c.round === best ? h("strong", null, "★ best") : ""],
    })),
    { id: "checkpoints-table" },
  );
}

function published(task) {
  const result = task.result;
  if (!result) {
    return h("p", { class: "muted" }, `Not published yet; it will be ${task.model.model_name} / ${task.output_model_version}.`);
  }
  const version = result.output_model_version || task.output_model_version;
  return h(
    "p",
    null,
    h("a", { href: `#/models/${enc(result.model_name)}/${enc(version)}`, id: "published-link" }, `${result.model_name} / ${version}`),
    ` (training result ${result.training_id})`,
  );
}

function summary(task) {
  return facts([
    ["Model", h("a", { href: `#/models/${enc(task.model.model_name)}/${enc(task.model.model_version)}` }, `${task.model.model_name} / ${task.model.model_version}`)],
    ["Strategy", task.strategy.strategy_name],
    ["Rounds", task.rounds],
    ["Min participants", task.min_participants ?? "strategy's own"],
    ["Publishes", task.publish],
    ["Runtime", task.runtime ?? "—"],
    ["Created", when(task.created_at)],
    ["Started", when(task.start_time)],
    ["Completed", when(task.completion_time)],
    ["Heartbeat", task.heartbeat ? [when(task.heartbeat.time), ` (${age(task.heartbeat.time)} ago)`] : "—"],
  ]);
}

function section(id, title) {
  const body = h("div", { id: `${id}-body` });
  return [h("section", { class: "card", "aria-labelledby": `${id}-h` }, h("h2", { id: `${id}-h` }, title), body), body];
}

function cancelButton(follow, refresh, status) {
  const button = h("button", { type: "button", class: "danger", id: "cancel" }, "Cancel task");
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await post(`/tasks/${enc(follow.id)}/cancel`, { message: "from the web console" });
      status.textContent = "Cancelled.";
      await refresh();
    } catch (error) {
      status.textContent = error instanceof ApiError ? `${error.status}: ${error.message}` : String(error);
      button.disabled = false;
    }
  });
  return button;
}

export async function taskView(main, id, ctx) {
  const follow = new Follow(id);
  await follow.load(true);
  const status = h("span", { role: "status" });
  const head = h("div", { class: "toolbar", id: "task-head" });
  const [sumCard, sumBody] = section("summary", "Plan and status");
  const [pubCard, pubBody] = section("published", "Published model");
  const chartsBox = h("div", { class: "grid", id: "charts" });
  const [roundCard, roundBody] = section("rounds", "Rounds");
  const [partCard, partBody] = section("participants", "Participants");
  const [condCard, condBody] = section("conditions-s", "Conditions");
  const [ckCard, ckBody] = section("checkpoints", "Checkpoints");
  const writer = ROLES[ctx.role] >= ROLES.writer;
  let cancel = null;
  let drawn = false;

  const draw = () => {
    if (drawn && !head.isConnected) return; // a refresh that ended after the user moved on
    drawn = true;
    const task = follow.task;
    main.dataset.phase = task.phase;
    if (writer && !cancel) cancel = cancelButton(follow, refresh, status);
    const parts = [phase(task.phase), lastReason(task) || "", progress(task)];
    if (cancel && !TERMINAL.includes(task.phase)) parts.push(cancel);
    head.replaceChildren(...parts, status); // (replaceChildren would print a null as "null")
    sumBody.replaceChildren(summary(task));
    pubBody.replaceChildren(published(task));
    chartsBox.replaceChildren(...charts(follow));
    roundBody.replaceChildren(roundTable(follow));
    partBody.replaceChildren(...participants(task));
    condBody.replaceChildren(timeline(task));
    ckBody.replaceChildren(checkpoints(follow));
  };
  const refresh = async () => {
    const task = await follow.load(false);
    draw();
    return !TERMINAL.includes(task.phase);
  };

  main.replaceChildren(
    h("p", null, h("a", { href: "#/tasks" }, "← Tasks")),
    h("h1", null, `Task ${id}`),
    head,
    h("div", { class: "grid" }, sumCard, pubCard),
    h("h2", null, "Curves"),
    chartsBox,
    roundCard,
    partCard,
    h("div", { class: "grid" }, condCard, ckCard),
  );
  draw();
  return TERMINAL.includes(follow.task.phase) ? null : poll(refresh);
}

