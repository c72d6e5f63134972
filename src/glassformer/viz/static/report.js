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
    const scores = data.scores[state.layer][state.head];
    $("which").textContent = `layer ${state.layer}, head ${state.head}`;
    $("orientation").textContent = state.video
      ? "video orientation: keys down the side, queries across the top; each column sums to 1"
      : "usual orientation: queries down the side, keys across the top; each row sums to 1";
    Grid.draw($("grid"), {
      tokens: data.tokens, values: pattern, pattern, scores, video: state.video,
      onHover: (h) => { $("hover").textContent = Grid.hoverText(h); },
    });
    Grid.thumbnails($("thumbs"), data.patterns, state.video, [state.layer, state.head], (l, h) => {
      state.layer = l; state.head = h; render();
    });
  }

  $("flip").addEventListener("click", () => { state.video = !state.video; render(); });
  if (data.next) Grid.bars($("next"), data.next); else $("next-section").hidden = true;
  render();
})();
