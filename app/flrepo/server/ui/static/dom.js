// Building the page: elements from data with textContent only (stored names are user data, never
// markup), and the formats every view shares.

const SVG = "http://www.w3.org/2000/svg";

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function attrs(el, props) {
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  return el;
}

export function h(tag, props, ...children) {
  return append(attrs(document.createElement(tag), props), children);
}

export function s(tag, props, ...children) {
  return append(attrs(document.createElementNS(SVG, tag), props), children);
}

export function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(n);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

export function when(iso) {
  if (!iso) return "—";
  const date = new Date(iso);
  return h("time", { datetime: date.toISOString(), title: date.toISOString() }, date.toLocaleString());
}

export function age(iso, now = Date.now()) {
  if (!iso) return "—";
  const seconds = Math.max(0, Math.round((now - new Date(iso).getTime()) / 1000));
  if (seconds < 90) return `${seconds} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

export function number(value, digits = 4) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "number") return Number.isInteger(value) ? String(value) : value.toFixed(digits);
  return String(value);
}

export function hash(sha) {
  if (!sha) return "—";
  return h("code", { class: "hash", title: sha }, sha.slice(0, 12) + "…");
}

export function phase(name) {
  return h("span", { class: `badge phase-${name}` }, name || "—");
}

// A table: columns [{label, num?}], rows of cells (each a value or a node).
export function table(caption, columns, rows, props) {
  return h(
    "div",
    { class: "scroll" },
    h(
      "table",
      props,
      caption ? h("caption", { class: "sr-only" }, caption) : null,
      h("thead", null, h("tr", null, columns.map((c) => h("th", { scope: "col", class: c.num ? "num" : null }, c.label)))),
      h(
        "tbody",
        null,
        rows.map((row) =>
          h(
            "tr",
            row.props || null,
            (row.cells || row).map((cell, i) => h("td", { class: columns[i] && columns[i].num ? "num" : null }, cell)),
          ),
        ),
      ),
    ),
  );
}

export function facts(pairs) {
  return h(
    "dl",
    { class: "facts" },
    pairs.filter(Boolean).map(([term, value]) => [h("dt", null, term), h("dd", null, value)]),
  );
}

export function errorBox(error) {
  return h("p", { class: "error", role: "alert" }, error.message || String(error));
}
