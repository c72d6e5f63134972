// The chapter 5 and 7 cards: word arithmetic, a direction and a PCA plane on the chosen
// model's own embeddings (/api/embed), and the toy model of superposition
// (/api/superposition, lesson:superposition). Text reaches the page only through textContent.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const { el, svg, api } = Grid; // grid.js comes first on the page

  const words = (text) => text.split(/[\s,]+/).filter(Boolean);

  // --- embeddings ---------------------------------------------------------------------------
  function showNearest(found, out) {
    const table = el("table", "nearest");
    const head = el("tr");
    ["rank", "token", "cosine"].forEach((h) => head.append(el("th", "", h)));
    table.append(head);
    found.nearest.forEach((n, i) => {
      const row = el("tr");
      row.append(el("td", "", String(i + 1)), el("td", "tok", `[${n.token}]`), el("td", "", n.cosine.toFixed(3)));
      table.append(row);
    });
    out.append(table);
    out.append(el("p", "muted small", `left out as the expression's own words: ${found.left_out.map((t) => `[${t}]`).join(", ")}`));
  }

  function showDirection(found, out) {
    const rows = [...found.words].sort((a, b) => a.projection - b.projection);
    const W = 360, H = 22 * rows.length + 30, mid = 230, half = 120;
    const top = Math.max(0.05, ...rows.map((r) => Math.abs(r.projection)));
    const pic = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": "words along the direction" });
    rows.forEach((r, i) => {
      const y = 10 + 22 * i, len = (Math.abs(r.projection) / top) * half;
      pic.append(svg("text", { x: mid - half - 8, y: y + 12, "text-anchor": "end", "font-size": 12 }, r.token));
      pic.append(svg("rect", { x: r.projection < 0 ? mid - len : mid, y, width: len, height: 14, fill: r.projection < 0 ? "#c0392b" : "#3b6fb6" }));
      pic.append(svg("text", { x: mid + half + 4, y: y + 12, "font-size": 11 }, r.projection.toFixed(3)));
    });
    pic.append(svg("line", { x1: mid, x2: mid, y1: 5, y2: H - 18, stroke: "#333" }));
    pic.append(svg("text", { x: mid, y: H - 4, "text-anchor": "middle", "font-size": 11 }, `cosine with (${found.direction}): right = more of it`));
    out.append(pic);
  }

  function showPlane(found, out) {
    const W = 360, H = 260, pad = 40;
    const xs = found.words.map((w) => w.x), ys = found.words.map((w) => w.y);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const sx = (x) => pad + ((x - x0) / (x1 - x0 || 1)) * (W - 2 * pad);
    const sy = (y) => H - pad - ((y - y0) / (y1 - y0 || 1)) * (H - 2 * pad);
    const pic = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img", "aria-label": "the words in their PCA plane" });
    pic.append(svg("rect", { x: 1, y: 1, width: W - 2, height: H - 2, fill: "none", stroke: "#ccd" }));
    found.words.forEach((w) => {
      pic.append(svg("circle", { cx: sx(w.x), cy: sy(w.y), r: 3, fill: "#3b6fb6" }));
      pic.append(svg("text", { x: sx(w.x) + 5, y: sy(w.y) - 4, "font-size": 12 }, w.token));
    });
    const [ex, ey] = found.explained.map((v) => `${Math.round(v * 100)}%`);
    pic.append(svg("text", { x: W / 2, y: H - 6, "text-anchor": "middle", "font-size": 11 }, `across: principal component 1 (${ex}); up: component 2 (${ey})`));
    out.append(pic);
  }

  async function runEmbed(event) {
    event.preventDefault();
    const out = $("embed-out");
    const kind = $("embed-kind").value;
    const body = { model: $("model").value, kind, matrix: $("embed-matrix").value, expression: $("embed-expression").value };
    if (kind !== "arithmetic") body.words = words($("embed-words").value);
    if (kind === "pca") delete body.expression;
    out.replaceChildren(el("p", "muted", "reading the model's own embedding matrix…"));
    try {
      const found = await api("/api/embed", body);
      out.replaceChildren(el("p", "muted small", found.method));
      ({ arithmetic: showNearest, direction: showDirection, pca: showPlane })[kind](found, out);
    } catch (err) {
      out.replaceChildren(el("p", "error", err.message));
    }
  }

  function kindChanged() {
    const kind = $("embed-kind").value;
    $("embed-expression-label").hidden = kind === "pca";
    $("embed-words-label").hidden = kind === "arithmetic";
    $("embed-expression").value = { arithmetic: "king - man + woman", direction: "woman - man", pca: "" }[kind];
    $("embed-words").value = kind === "direction" ? "king queen uncle aunt he she table" : "king queen man woman uncle aunt boy girl";
  }

  // --- superposition -------------------------------------------------------------------------
  function arrows(run, features) {
    const S = 150, c = S / 2, scale = S / 3;
    const pic = svg("svg", { viewBox: `0 0 ${S} ${S + 30}`, width: S, role: "img", "aria-label": `W's columns at sparsity ${run.sparsity}` });
    pic.append(svg("circle", { cx: c, cy: c, r: scale, fill: "none", stroke: "#dde" }));
    for (let i = 0; i < features; i++) {
      const x = c + run.W[0][i] * scale, y = c - run.W[1][i] * scale;
      const shade = Math.round(30 + (170 * i) / Math.max(1, features - 1));
      pic.append(svg("line", { x1: c, y1: c, x2: x, y2: y, stroke: `rgb(${shade},${shade},200)`, "stroke-width": 2 }));
      pic.append(svg("circle", { cx: x, cy: y, r: 2.5, fill: `rgb(${shade},${shade},200)` }));
      pic.append(svg("text", { x: x + 3, y: y - 3, "font-size": 10 }, String(i)));
    }
    const kept = run.represented.length;
    pic.append(svg("text", { x: c, y: S + 12, "text-anchor": "middle", "font-size": 11 }, `sparsity ${run.sparsity}`));
    pic.append(svg("text", { x: c, y: S + 26, "text-anchor": "middle", "font-size": 11 }, `${kept} of ${features} kept`));
    return pic;
  }

  async function runToy(event) {
    event.preventDefault();
    const out = $("toy-out");
    const sparsities = words($("toy-sparsity").value).map(Number);
    const body = { features: Number($("toy-features").value), dims: Number($("toy-dims").value), sparsities, importance: Number($("toy-importance").value) };
    out.replaceChildren(el("p", "muted", "training the toy model (a few seconds)…"));
    try {
      const found = await api("/api/superposition", body);
      const row = el("div", "toy-row");
      if (found.dims === 2) found.runs.forEach((run) => row.append(arrows(run, found.features)));
      out.replaceChildren(el("p", "muted small", found.dims === 2
        ? "each arrow is a column of W: the direction a feature is stored in (darker: more important)"
        : "more than 2 dimensions: the arrows are not drawn; the lines below say how many features fit"), row);
      found.summary.split("\n").forEach((line) => out.append(el("p", "small", line)));
    } catch (err) {
      out.replaceChildren(el("p", "error", err.message));
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    if (!$("embed-form")) return;
    $("embed-form").addEventListener("submit", runEmbed);
    $("embed-kind").addEventListener("change", kindChanged);
    $("toy-form").addEventListener("submit", runToy);
    kindChanged();
  });
})();
