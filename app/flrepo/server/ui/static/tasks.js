// Tasks: the list (phase, reason, progress, participants, age), refreshed while the tab is visible.

import { enc, get } from "./api.js";
import { age, h, phase, table } from "./dom.js";
import { poll } from "./poll.js";

// A list page: each task is a full document (about 1 KB), so the first render waits for few of them.
const PAGE = 25;

export function lastReason(task) {
  const conditions = task.conditions || [];
  return conditions.length ? conditions[conditions.length - 1].reason || "" : "";
}

export function progress(task) {
  const total = task.rounds || 0;
  const current = Math.min(task.current_round || 0, total || Infinity);
  return h(
    "span",
    { class: "progress" },
    h("progress", { max: total || 1, value: current, "aria-label": `round ${current} of ${total}` }),
    ` ${current}/${total}`,
  );
}

function rows(tasks) {
  const now = Date.now();
  return [...tasks]
    .sort((a, b) => String(b.created_at ?? "").localeCompare(String(a.created_at ?? "")))
    .map((task) => ({
      props: { dataset: { task: task.task_id } },
      cells: [
        h("a", { href: `#/tasks/${enc(task.task_id)}` }, task.task_id),
        phase(task.phase),
        lastReason(task) || "—",
        progress(task),
        `${task.active ?? 0} / ${task.succeeded ?? 0} / ${task.failed ?? 0}`,
        age(task.created_at, now),
      ],
    }));
}

export async function tasksView(main) {
  const columns = [
    { label: "Task" },
    { label: "Phase" },
    { label: "Reason" },
    { label: "Round" },
    { label: "Participants active / succeeded / failed" },
    { label: "Age" },
  ];
  let tasks = [];
  let total = null;
  const holder = h("div");
  const count = h("p", { class: "muted", "aria-live": "polite" });
  const more = h("button", { type: "button" }, "Show more");
  const draw = () => {
    holder.replaceChildren(table("Tasks", columns, rows(tasks), { id: "tasks-table" }));
    count.textContent = `${tasks.length} of ${total ?? tasks.length} tasks`;
    more.hidden = total === null || tasks.length >= total;
  };
  const load = async () => {
    const page = await get("/tasks", { limit: Math.max(PAGE, tasks.length) });
    tasks = page.data;
    total = page.total;
    draw();
  };
  more.addEventListener("click", async () => {
    const next = await get("/tasks", { limit: PAGE, offset: tasks.length });
    tasks.push(...next.data);
    draw();
  });
  main.replaceChildren(h("h1", null, "Tasks"), count, holder, more);
  await load();
  return poll(load);
}
