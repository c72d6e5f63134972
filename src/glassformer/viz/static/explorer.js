// The explorer page: talks to the JSON API of the server that served it.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const state = { video: true, analysis: null, head: null, models: [], requestId: 0 };

  async function api(path, body) {
    const res = await fetch(path, body === undefined ? {} : {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body),
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(typeof data.detail === "string" ? data.detail : `request failed (${res.status})`);
    return data;
  }

  function status(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "muted";
  }

  function fillSelect(select, count, prefix) {
    const keep = Number(select.value || 0);
    select.replaceChildren();
    for (let i = 0; i < count; i++) {
      const o = document.createElement("option");
      o.value = String(i);
      o.textContent = `${prefix} ${i}`;
      select.appendChild(o);
    }
    select.value = String(keep < count ? keep : 0);
  }

  function strip(container, tokens, matrix) {
    container.replaceChildren();
    const d = matrix[0].length;
    const maxAbs = Math.max(1e-9, ...matrix.flat().map(Math.abs));
    const box = Grid.el("div", "strip");
    box.style.gridTemplateColumns = `max-content repeat(${d}, 7px)`;
    tokens.forEach((tok, t) => {
      box.appendChild(Grid.el("div", "tok", Grid.shown(tok)));
      for (const v of matrix[t]) {
        const s = Grid.el("div", "s");
        const a = Math.min(1, Math.abs(v) / maxAbs);
        s.style.background = v >= 0 ? `rgba(200,60,40,${a})` : `rgba(40,90,200,${a})`;
        box.appendChild(s);
      }
    });
    container.appendChild(box);
  }

  function drawHead() {
    const h = state.head;
    if (!h) return;
    const layer = Number($("layer").value), head = Number($("head").value);
    $("which").textContent = `layer ${layer}, head ${head}, step by step`;
    const orient = state.video
      ? "video orientation: keys down the side, queries across the top; each column sums to 1"
      : "usual orientation: queries down the side, keys across the top; each row sums to 1";
    $("orientation").textContent = orient;
    $("pattern-note").textContent = "softmax of each query's scores: " + orient;
    strip($("q"), h.tokens, h.q);
    strip($("k"), h.tokens, h.k);
    const masked = h.scores.map((row, q) => row.map((v, k) => (h.mask[q][k] ? null : v)));
    Grid.draw($("scores"), { tokens: h.tokens, values: masked, signed: true, video: state.video });
    const maskValues = h.mask.map((row) => row.map((m) => (m ? null : 1)));
    Grid.draw($("mask"), { tokens: h.tokens, values: maskValues, video: state.video });
    $("mask-note").textContent = state.analysis && !state.analysis.decoder
      ? "an encoder lets every token see every other: nothing is masked"
      : "−∞ where a later token would inform an earlier one";
    const grid = Grid.draw($("grid"), {
      tokens: h.tokens, values: h.pattern, pattern: h.pattern, scores: masked, video: state.video,
      onHover: (x) => { $("hover").textContent = Grid.hoverText(x); },
    });
    grid.dataset.layer = layer;
    grid.dataset.head = head;
    Grid.bars($("delta"), h.tokens.map((tok, t) => ({ token: tok, prob: Math.min(1, h.delta_e_norm[t] / Math.max(1e-9, ...h.delta_e_norm)) })));
    $("delta").querySelectorAll(".bar-value").forEach((e, t) => {
      e.textContent = `${h.delta_e_norm[t].toFixed(2)} / ${h.e_norm[t].toFixed(1)}`;
    });
    if (state.analysis) {
      Grid.thumbnails($("thumbs"), state.analysis.patterns, state.video, [layer, head], (l, hh) => {
        $("layer").value = String(l);
        $("head").value = String(hh);
        loadHead();
      });
    }
  }

  async function loadHead() {
    const id = ++state.requestId;
    try {
      const h = await api("/api/head", { model: $("model").value, text: $("text").value,
        layer: Number($("layer").value), head: Number($("head").value) });
      if (id !== state.requestId) return;  // a newer request is on its way
      state.head = h;
      drawHead();
      status(`${h.tokens.length} tokens`);
    } catch (err) {
      status(err.message, true);
    }
  }

  function drawNext(n) {
    Grid.bars($("next"), n.next);
    $("sample").textContent = `sampled at T = ${n.temperature.toFixed(2)}: “${Grid.shown(n.sample.token)}”`;
  }

  async function loadNext() {
    const t = Number($("temperature").value);
    $("temperature-value").textContent = t.toFixed(2);
    if (!state.analysis || !state.analysis.decoder) return;
    try {
      drawNext(await api("/api/next", { model: $("model").value, text: $("text").value, temperature: t }));
    } catch (err) {
      status(err.message, true);
    }
  }

  async function loadDetectors() {
    const box = $("detectors");
    box.replaceChildren(Grid.el("p", "muted", "scoring heads…"));
    try {
      const d = await api(`/api/heads?model=${encodeURIComponent($("model").value)}`);
      box.replaceChildren();
      for (const [kind, info] of Object.entries(d.kinds)) {
        const [l, h, s] = info.strongest;
        box.appendChild(Grid.el("p", "", `${kind} — ${info.definition}; strongest: layer ${l}, head ${h} (${s.toFixed(2)})`));
        const table = Grid.el("table", "scores");
        const head = Grid.el("tr");
        head.appendChild(Grid.el("th", "", "layer"));
        info.scores[0].forEach((_, i) => head.appendChild(Grid.el("th", "", `h${i}`)));
        table.appendChild(head);
        info.scores.forEach((row, li) => {
          const tr = Grid.el("tr");
          tr.appendChild(Grid.el("th", "", String(li)));
          row.forEach((v) => {
            const td = Grid.el("td", "", v.toFixed(2));
            td.style.background = `rgba(30,90,180,${Math.max(0, Math.min(1, v)) * 0.6})`;
            tr.appendChild(td);
          });
          table.appendChild(tr);
        });
        box.appendChild(table);
      }
    } catch (err) {
      box.replaceChildren(Grid.el("p", "error", err.message));
    }
  }

  async function analyzeText() {
    status("running…");
    try {
      const a = await api("/api/analyze", { model: $("model").value, text: $("text").value,
        temperature: Number($("temperature").value) });
      state.analysis = a;
      fillSelect($("layer"), a.n_layers, "layer");
      fillSelect($("head"), a.n_heads, "head");
      $("next-section").hidden = !a.decoder;
      if (a.decoder) drawNext(a);
      await loadHead();
    } catch (err) {
      status(err.message, true);
    }
  }

  async function start() {
    try {
      state.models = await api("/api/models");
    } catch (err) {
      status(err.message, true);
      return;
    }
    for (const m of state.models) {
      const o = document.createElement("option");
      o.value = m.name;
      o.textContent = m.note ? `${m.name} (${m.note})` : m.name;
      $("model").appendChild(o);
    }
    await analyzeText();
    loadDetectors();
  }

  $("text").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); analyzeText(); } });
  $("model").addEventListener("change", () => { analyzeText().then(loadDetectors); });
  $("layer").addEventListener("change", loadHead);
  $("head").addEventListener("change", loadHead);
  $("flip").addEventListener("click", () => { state.video = !state.video; drawHead(); });
  let timer = null;
  $("temperature").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(loadNext, 60); });
  start();
})();
