// Line charts drawn as inline SVG (no library): one value per round, one line per series.

import { h, number, s } from "./dom.js";

const W = 640;
const H = 260;
const PAD = { left: 56, right: 16, top: 12, bottom: 34 };
export const COLORS = ["#0b5cad", "#cf222e", "#1a7f37", "#8250df", "#bc4c00", "#0a7f86", "#6e7781", "#bf3989"];

function extent(values) {
  let lo = Math.min(...values);
  let hi = Math.max(...values);
  if (lo === hi) {
    lo -= Math.abs(lo) * 0.1 || 1;
    hi += Math.abs(hi) * 0.1 || 1;
  }
  return [lo, hi];
}

function ticks(lo, hi, count) {
  return Array.from({ length: count + 1 }, (_, i) => lo + ((hi - lo) * i) / count);
}

// series: [{label, points: [[round, value], ...], main?}]; the first series is the aggregated one.
export function lineChart(title, series, id) {
  const drawn = series.filter((one) => one.points.length);
  const figure = h("figure", { class: "chart", "data-chart": id });
  figure.append(h("figcaption", { id: `${id}-title` }, title));
  if (!drawn.length) {
    figure.append(h("p", { class: "muted" }, "No rounds reported yet."));
    return figure;
  }
  const xs = drawn.flatMap((one) => one.points.map((p) => p[0]));
  const ys = drawn.flatMap((one) => one.points.map((p) => p[1]));
  const [x0, x1] = xs.length > 1 ? extent(xs) : [xs[0] - 1, xs[0] + 1];
  const [y0, y1] = extent(ys);
  const x = (v) => PAD.left + ((v - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const y = (v) => H - PAD.bottom - ((v - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-labelledby": `${id}-title` });
  for (const v of ticks(y0, y1, 4)) {
    svg.append(s("line", { class: "gridline", x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }));
    svg.append(s("text", { x: PAD.left - 6, y: y(v) + 4, "text-anchor": "end" }, number(v, 3)));
  }
  const rounds = [...new Set(xs)].sort((a, b) => a - b);
  const step = Math.max(1, Math.ceil(rounds.length / 10));
  rounds.forEach((r, i) => {
    if (i % step === 0) svg.append(s("text", { x: x(r), y: H - PAD.bottom + 16, "text-anchor": "middle" }, r));
  });
  svg.append(s("text", { x: (W + PAD.left) / 2, y: H - 4, "text-anchor": "middle" }, "round"));
  svg.append(s("line", { class: "axis", x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom }));
  svg.append(s("line", { class: "axis", x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom }));
  drawn.forEach((one, i) => {
    const color = COLORS[i % COLORS.length];
    const points = [...one.points].sort((a, b) => a[0] - b[0]);
    const d = points.map((p, k) => `${k ? "L" : "M"}${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    const group = s("g", { class: "series", "data-series": one.label, "data-points": points.length });
    group.append(
      s("path", {
        d,
        fill: "none",
        stroke: color,
        "stroke-width": one.main ? 2.5 : 1.5,
        "stroke-dasharray": one.main ? null : "5 3",
      }),
    );
    for (const p of points) {
      group.append(
        s("circle", { cx: x(p[0]), cy: y(p[1]), r: one.main ? 3 : 2, fill: color }, s("title", null, `${one.label}, round ${p[0]}: ${number(p[1])}`)),
      );
    }
    svg.append(group);
  });
  figure.append(svg);
  figure.append(
    h(
      "ul",
      { class: "legend" },
      drawn.map((one, i) => h("li", { style: null, dataset: { color: COLORS[i % COLORS.length] } }, one.label)),
    ),
  );
  for (const item of figure.querySelectorAll(".legend li")) item.style.setProperty("--swatch", item.dataset.color);
  return figure;
}
