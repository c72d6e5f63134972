// The self-contained report: everything it needs is in the JSON block of the page.
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("glassformer-data").textContent);
  const state = { layer: data.start[0], head: data.start[1], video: true };
  const $ = (id) => document.getElementById(id);

  function pickers() {
    for (const [id, count, key] of [["layers", data.n_layers, "layer"], ["heads", data.n_heads, "head"]]) {
      const box = $(id);
      box.replaceChildren();
      for (let i = 0; i < count; i++) {
        const b = Grid.el("button", "pick" + (state[key] === i ? " on" : ""), String(i));
        b.addEventListener("click", () => { state[key] = i; render(); });
        box.appendChild(b);
      }
    }
  }

  function render() {
    pickers();
    const pattern = data.patterns[state.layer][state.head];
    const scores = data.scores ? data.scores[state.layer][state.head] : null;
    // masked cells (null scores) are drawn hatched in both grids, never as a colour
    const masked = scores ? pattern.map((row, q) => row.map((v, k) => (scores[q][k] === null ? null : v))) : pattern;
    $("which").textContent = `layer ${state.layer}, head ${state.head}`;
    $("orientation").textContent = Grid.orientationText(state.video);
    Grid.fitCells([$("grid"), $("scores")], data.tokens.length);
    const onHover = (h) => { $("hover").textContent = Grid.hoverText(h); };
    Grid.draw($("grid"), { tokens: data.tokens, values: masked, kind: "weight", pattern, scores, video: state.video, onHover });
    Grid.legend($("grid-legend"), { kind: "weight", masked: data.causal });
    $("scores-section").hidden = !scores;
    if (scores) {
      const table = Grid.draw($("scores"), {
        tokens: data.tokens, values: scores, kind: "signed", pattern, scores, video: state.video, onHover,
      });
      Grid.legend($("scores-legend"), { kind: "signed", maxAbs: Number(table.dataset.maxAbs), masked: data.causal });
    }
    $("hover").textContent = ""; // the old line may name another head's numbers
    drawReading();
    Grid.thumbnails($("thumbs"), data.patterns, state.video, [state.layer, state.head], (l, h) => {
      state.layer = l; state.head = h; render();
    });
  }

  // what explain ends with, for the head the report opened on: said only while that head is shown
  function drawReading() {
    const r = data.reading, box = $("reading");
    box.replaceChildren();
    if (!r) return;
    if (r.layer !== state.layer || r.head !== state.head) {
      const b = Grid.el("button", "link", `layer ${r.layer}, head ${r.head}`);
      b.addEventListener("click", () => { state.layer = r.layer; state.head = r.head; render(); });
      box.append(Grid.el("span", "muted small", "what this head's ΔE does is read for the head the report opened on: "), b);
      return;
    }
    for (const line of r.lines) box.appendChild(Grid.el("p", "small", line));
  }

  $("flip").addEventListener("click", () => { state.video = !state.video; render(); });
  if (data.next) Grid.bars($("next"), data.next); else $("next-section").hidden = true;
  render();
})();
