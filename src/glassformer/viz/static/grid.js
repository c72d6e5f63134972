// Drawing attention grids with plain DOM elements; shared by the HTML report and the
// explorer. Token text is only ever set with textContent, never parsed as HTML.
"use strict";

const Grid = (() => {
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function shown(tok) {
    const t = tok.replace(/\n/g, "⏎").replace(/\t/g, "⇥");
    return t.trim() === "" ? JSON.stringify(tok) : t;
  }

  function fmt(x, digits) {
    if (x === null || x === undefined) return "−∞ (masked)";
    return Number(x).toFixed(digits === undefined ? 3 : digits);
  }

  // A query×key matrix drawn as a grid. pattern[q][k] (rows are queries, as stored);
  // video=true draws keys down the side and queries across the top (columns sum to 1).
  // values: the cell colours (a pattern in [0,1] or signed scores); masked cells null.
  function draw(container, opts) {
    const { tokens, values, pattern, scores, video, signed, onHover } = opts;
    const isMasked = (q, k) => values[q][k] === null || (scores && scores[q][k] === null);
    container.replaceChildren();
    const n = tokens.length;
    const table = el("div", "grid");
    table.style.gridTemplateColumns = `max-content repeat(${n}, var(--cell))`;
    table.dataset.orientation = video ? "video" : "usual";
    table.appendChild(el("div", "corner", video ? "key ↓  query →" : "query ↓  key →"));
    for (let c = 0; c < n; c++) table.appendChild(el("div", "top-label", shown(tokens[c])));
    const maxAbs = signed ? Math.max(1e-9, ...values.flat().filter((v) => v !== null).map(Math.abs)) : 1;
    for (let r = 0; r < n; r++) {
      table.appendChild(el("div", "side-label", shown(tokens[r])));
      for (let c = 0; c < n; c++) {
        const [q, k] = video ? [c, r] : [r, c];
        const v = values[q][k];
        const cell = el("div", "cell");
        cell.dataset.q = q;
        cell.dataset.k = k;
        if (isMasked(q, k)) {
          cell.classList.add("masked");  // −∞ before the softmax, weight exactly 0 after
          cell.textContent = v === null && n <= 16 ? "−∞" : "";
        } else if (signed) {
          const a = Math.min(1, Math.abs(v) / maxAbs);
          cell.style.background = v >= 0 ? `rgba(200,60,40,${a})` : `rgba(40,90,200,${a})`;
        } else {
          cell.style.background = `rgba(30,90,180,${Math.max(0, Math.min(1, v))})`;
          cell.dataset.weight = v;
        }
        cell.addEventListener("mouseenter", () => {
          if (!onHover) return;
          onHover({
            query: tokens[q], key: tokens[k], q, k,
            dot: scores ? scores[q][k] : undefined,
            weight: pattern ? pattern[q][k] : undefined,
          });
        });
        table.appendChild(cell);
      }
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

  // Every head as a small canvas; click one to choose it.
  function thumbnails(container, patterns, video, selected, onPick) {
    container.replaceChildren();
    const L = patterns.length, H = patterns[0].length, n = patterns[0][0].length;
    const box = el("div", "thumbs");
    box.style.gridTemplateColumns = `max-content repeat(${H}, auto)`;
    box.appendChild(el("div", "corner", ""));
    for (let h = 0; h < H; h++) box.appendChild(el("div", "thumb-head", `h${h}`));
    for (let l = 0; l < L; l++) {
      box.appendChild(el("div", "thumb-layer", `L${l}`));
      for (let h = 0; h < H; h++) {
        const c = document.createElement("canvas");
        const px = Math.max(1, Math.floor(64 / n));
        c.width = c.height = n * px;
        c.className = "thumb" + (selected && selected[0] === l && selected[1] === h ? " selected" : "");
        c.title = `layer ${l}, head ${h}`;
        const ctx = c.getContext("2d");
        for (let q = 0; q < n; q++) for (let k = 0; k < n; k++) {
          const v = patterns[l][h][q][k];
          ctx.fillStyle = `rgba(30,90,180,${v})`;
          const [x, y] = video ? [q, k] : [k, q];
          ctx.fillRect(x * px, y * px, px, px);
        }
        c.addEventListener("click", () => onPick(l, h));
        box.appendChild(c);
      }
    }
    container.appendChild(box);
  }

  function bars(container, items) {
    container.replaceChildren();
    for (const it of items) {
      const row = el("div", "bar-row");
      row.appendChild(el("span", "bar-label", shown(it.token)));
      const bar = el("span", "bar");
      bar.style.width = `${(100 * it.prob).toFixed(1)}%`;
      row.appendChild(bar);
      row.appendChild(el("span", "bar-value", it.prob.toFixed(3)));
      container.appendChild(row);
    }
  }

  return { el, shown, fmt, draw, hoverText, thumbnails, bars };
})();
