// Drawing attention with plain DOM elements; shared by the self-contained HTML report and
// the explorer. Token text is only ever set with textContent, never parsed as HTML.
//
// Colours, the same everywhere:
//   weights (softmax, 0..1): white -> teal, one hue so a weight never reads as a sign;
//   signed numbers (dot products, vector entries): blue < 0, white = 0, red > 0, the scale
//     centred on zero and symmetric (±max |value|), so white always means exactly 0;
//   masked (−∞ before the softmax, weight exactly 0 after): grey hatching, labelled −∞.
"use strict";

const Grid = (() => {
  const TEAL = [0, 105, 110];
  const RED = [200, 45, 35];
  const BLUE = [35, 90, 200];

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // the explorer's one way to ask its server: POST JSON (GET without a body); a refusal's
  // one-line detail becomes the Error's message
  async function api(path, body) {
    const res = await fetch(path, body === undefined ? {} : {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(typeof data.detail === "string" ? data.detail : `request failed (${res.status})`);
    return data;
  }

  function shown(tok) {
    const t = String(tok).replace(/\n/g, "⏎").replace(/\t/g, "⇥");
    return t.trim() === "" ? JSON.stringify(tok) : t;
  }

  function fmt(x, digits) {
    if (x === null || x === undefined) return "−∞ (masked)";
    return Number(x).toFixed(digits === undefined ? 3 : digits);
  }

  function mix(rgb, a) {
    const c = rgb.map((v) => Math.round(255 + (v - 255) * a));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }

  // weight in [0, 1] -> white..teal
  function weightColor(v) {
    return mix(TEAL, Math.max(0, Math.min(1, v)));
  }

  // signed value -> blue..white..red, white exactly at 0, full colour at ±maxAbs
  function signedColor(v, maxAbs) {
    const a = Math.max(-1, Math.min(1, v / (maxAbs || 1)));
    return a >= 0 ? mix(RED, a) : mix(BLUE, -a);
  }

  // dark text on light cells, light text on dark ones
  function inkFor(strength) {
    return strength > 0.55 ? "#fff" : "#1d2330";
  }

  function maxAbsOf(matrix) {
    let m = 0;
    for (const row of matrix) for (const v of row) if (v !== null && Math.abs(v) > m) m = Math.abs(v);
    return m || 1;
  }

  function orientationText(video) {
    return video
      ? "video orientation: keys down the side, queries across the top; each column sums to 1"
      : "usual orientation: queries down the side, keys across the top; each row sums to 1";
  }

  // cells small enough that a long text's grid stays on the screen
  function fitCells(containers, n) {
    const px = n <= 16 ? 26 : n <= 32 ? 18 : 11;
    for (const c of containers) c.style.setProperty("--cell", `${px}px`);
  }

  // A query×key matrix drawn as a grid. Matrices are [query][key] (rows are queries, as
  // stored); video=true draws keys down the side and queries across the top.
  //   values: the cell colours, null where masked; kind "weight" (0..1) or "signed"
  //   pattern, scores: for the hover line; selected: a query to outline
  //   offset: the position of tokens[0] in the text (a window of a long one): cells,
  //     selected and the callbacks speak in positions of the text
  //   onHover(info | null), onPick(query)
  function draw(container, opts) {
    const { tokens, values, pattern, scores, video, onHover, onPick } = opts;
    const off = opts.offset || 0;
    const signed = opts.kind === "signed";
    container.replaceChildren();
    const n = tokens.length;
    const maxAbs = signed ? maxAbsOf(values) : 1;
    const selected = opts.selected - off;
    const table = el("div", "grid");
    table.style.gridTemplateColumns = `max-content repeat(${n}, var(--cell))`;
    table.dataset.orientation = video ? "video" : "usual";
    table.dataset.kind = signed ? "signed" : "weight";
    table.dataset.maxAbs = String(maxAbs);
    table.appendChild(el("div", "corner", video ? "key ↓ · query →" : "query ↓ · key →"));
    for (let c = 0; c < n; c++) {
      const top = el("div", "top-label", shown(tokens[c]));
      if (selected === c && video) top.classList.add("sel");
      table.appendChild(top);
    }
    for (let r = 0; r < n; r++) {
      const side = el("div", "side-label", shown(tokens[r]));
      if (selected === r && !video) side.classList.add("sel");
      table.appendChild(side);
      for (let c = 0; c < n; c++) {
        const [q, k] = video ? [c, r] : [r, c];
        const v = values[q][k];
        const cell = el("div", "cell");
        cell.dataset.q = q + off;
        cell.dataset.k = k + off;
        if (selected === q) cell.classList.add("sel");
        if (v === null) {
          cell.classList.add("masked"); // −∞ before the softmax, weight exactly 0 after
          if (n <= 24) cell.textContent = "−∞";
        } else if (signed) {
          cell.style.background = signedColor(v, maxAbs);
          cell.dataset.value = v;
        } else {
          cell.style.background = weightColor(v);
          cell.dataset.weight = v;
        }
        table.appendChild(cell);
      }
    }
    // one listener for the whole grid, not one per cell
    const cellOf = (e) => (e.target instanceof Element ? e.target.closest(".cell") : null);
    table.addEventListener("mouseover", (e) => {
      const cell = cellOf(e);
      if (!cell || !onHover) return;
      const q = Number(cell.dataset.q), k = Number(cell.dataset.k);
      onHover({
        query: tokens[q - off], key: tokens[k - off], q, k,
        dot: scores ? scores[q - off][k - off] : undefined,
        weight: pattern ? pattern[q - off][k - off] : undefined,
      });
    });
    if (onPick) {
      table.addEventListener("click", (e) => {
        const cell = cellOf(e);
        if (cell) onPick(Number(cell.dataset.q));
      });
    }
    container.appendChild(table);
    return table;
  }

  function hoverText(h) {
    let s = `query “${shown(h.query)}” (${h.q}) · key “${shown(h.key)}” (${h.k})`;
    if (h.dot !== undefined) s += ` · dot product ${fmt(h.dot)}`;
    if (h.weight !== undefined) s += ` · weight ${fmt(h.weight)}`;
    return s;
  }

  // The colour key of a grid: a gradient with its end and middle values, and the masked swatch.
  function legend(container, opts) {
    container.replaceChildren();
    const box = el("div", "legend");
    const bar = el("span", "legend-bar");
    let ticks;
    if (opts.kind === "signed") {
      const m = opts.maxAbs || 1;
      bar.style.background = `linear-gradient(to right, ${signedColor(-m, m)}, #fff, ${signedColor(m, m)})`;
      ticks = [`−${m.toFixed(2)}`, "0", `+${m.toFixed(2)}`];
    } else {
      bar.style.background = `linear-gradient(to right, #fff, ${weightColor(1)})`;
      ticks = ["0", "0.5", "1"];
    }
    const scale = el("span", "legend-scale");
    scale.appendChild(bar);
    const labels = el("span", "legend-ticks");
    for (const t of ticks) labels.appendChild(el("span", "", t));
    scale.appendChild(labels);
    box.appendChild(el("span", "legend-name", opts.label || (opts.kind === "signed" ? "q·k/√d" : "weight")));
    box.appendChild(scale);
    if (opts.masked !== false) {
      const m = el("span", "legend-masked");
      m.appendChild(el("span", "swatch masked", "−∞"));
      m.appendChild(el("span", "", opts.kind === "signed" ? "masked: set to −∞" : "masked: weight 0"));
      box.appendChild(m);
    }
    container.appendChild(box);
  }

  // A vector as a strip of coloured cells on a canvas (one pixel per number, scaled up).
  function strip(values, maxAbs, title) {
    const c = document.createElement("canvas");
    c.className = "strip";
    c.width = Math.max(1, values.length);
    c.height = 1;
    const ctx = c.getContext("2d");
    values.forEach((v, i) => {
      ctx.fillStyle = v === null ? "#ccc" : signedColor(v, maxAbs);
      ctx.fillRect(i, 0, 1, 1);
    });
    if (title) c.title = title;
    return c;
  }

  // Every head as a small canvas; click one to choose it. perPixel: tokens per pixel (a
  // long text's patterns come pooled)
  function thumbnails(container, patterns, video, selected, onPick, perPixel) {
    container.replaceChildren();
    const L = patterns.length, H = patterns[0].length, n = patterns[0][0].length;
    const box = el("div", L * H > 64 ? "thumbs small" : "thumbs");
    box.style.gridTemplateColumns = `max-content repeat(${H}, auto)`;
    box.appendChild(el("div", "corner", ""));
    for (let h = 0; h < H; h++) box.appendChild(el("div", "thumb-head", `h${h}`));
    for (let l = 0; l < L; l++) {
      box.appendChild(el("div", "thumb-layer", `L${l}`));
      for (let h = 0; h < H; h++) {
        const c = document.createElement("canvas");
        c.width = c.height = n;
        const on = selected && selected[0] === l && selected[1] === h;
        c.className = "thumb" + (on ? " selected" : "");
        c.title = `layer ${l}, head ${h}` + (perPixel > 1 ? ` (one pixel: ~${perPixel.toFixed(1)} tokens)` : "");
        c.dataset.layer = l;
        c.dataset.head = h;
        const ctx = c.getContext("2d");
        const img = ctx.createImageData(n, n);
        for (let q = 0; q < n; q++) for (let k = 0; k < n; k++) {
          const v = Math.max(0, Math.min(1, patterns[l][h][q][k]));
          const [x, y] = video ? [q, k] : [k, q];
          const at = 4 * (y * n + x);
          for (let ch = 0; ch < 3; ch++) img.data[at + ch] = Math.round(255 + (TEAL[ch] - 255) * v);
          img.data[at + 3] = 255;
        }
        ctx.putImageData(img, 0, 0);
        c.addEventListener("click", () => onPick(l, h));
        box.appendChild(c);
      }
    }
    container.appendChild(box);
  }

  // Horizontal bars: items [{token, prob}]; a row with prob 0 is drawn as cut.
  function bars(container, items) {
    container.replaceChildren();
    for (const it of items) {
      const row = el("div", "bar-row" + (it.prob === 0 ? " cut" : ""));
      row.dataset.prob = it.prob;
      row.appendChild(el("span", "bar-label", shown(it.token)));
      const track = el("span", "bar-track");
      const bar = el("span", "bar");
      bar.style.width = `${(100 * Math.max(0, Math.min(1, it.prob))).toFixed(1)}%`;
      track.appendChild(bar);
      row.appendChild(track);
      row.appendChild(el("span", "bar-value", it.label !== undefined ? it.label : it.prob.toFixed(3)));
      container.appendChild(row);
    }
  }

  return {
    el, svg, api, shown, fmt, weightColor, signedColor, inkFor, maxAbsOf, orientationText,
    fitCells, draw, hoverText, legend, strip, thumbnails, bars,
  };
})();
