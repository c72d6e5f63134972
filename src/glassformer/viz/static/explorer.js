// The explorer page: one story for one query token, told with the JSON API of the server
// that served it. Token text reaches the page only through textContent (grid.js's el).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const { el, shown, api } = Grid;
  const state = {
    models: [],
    model: null, // what the current analysis was run on
    text: "",
    analysis: null, // /api/analyze: tokens, every head's pattern, next tokens
    walk: null, // /api/head: one head, step by step, for every token
    layer: 0,
    head: 0,
    query: 0,
    autoQuery: true, // no token picked on this sentence yet: follow the one /api/head suggests
    video: true, // the video's orientation: keys down the side, queries across the top
    pickedHead: false, // the learner chose a head: a late showcase answer must not move it
    showcase: null,
    off: [], // [layer, head] switched off: /api/ablate compares the next token without them
    changed: [], // [layer, head, largest weight change]: later heads whose pattern moved
    seq: { analyze: 0, head: 0, next: 0, mlp: 0, detect: 0, ablate: 0, patch: 0, circuit: 0 }, // newest of each kind
  };

  // /api/analyze packs every head's pattern as uint16 (weight × scale) in base64; back to
  // nested arrays, patterns[layer][head][query][key]
  function unpack(p) {
    const bytes = Uint8Array.from(atob(p.uint16_base64), (c) => c.charCodeAt(0));
    const codes = new Uint16Array(bytes.buffer);
    const [L, H, T, S] = p.shape;
    let at = 0;
    const out = [];
    for (let l = 0; l < L; l++) {
      const heads = [];
      for (let h = 0; h < H; h++) {
        const rows = [];
        for (let t = 0; t < T; t++) {
          const row = new Array(S);
          for (let k = 0; k < S; k++) row[k] = codes[at++] / p.scale;
          rows.push(row);
        }
        heads.push(rows);
      }
      out.push(heads);
    }
    return out;
  }

  // /api/head sends the grids' rows (dots, mask, pattern) for a window of queries around
  // the one followed, w.rows[0] to w.rows[1] − 1, each over every key: the row of query q
  // is there when q is in the window (on a short text, every row is)
  function rowOf(w, name, q) {
    const i = q - w.rows[0];
    return i >= 0 && i < w[name].length ? w[name][i] : null;
  }

  function inWindow(w, q) {
    return q >= w.rows[0] && q < w.rows[1];
  }

  function status(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "muted";
  }

  function clearHover() {
    $("hover").textContent = "";
  }

  function fillSelect(select, count, prefix, value) {
    select.replaceChildren();
    for (let i = 0; i < count; i++) {
      const o = el("option", "", `${prefix} ${i}`);
      o.value = String(i);
      select.appendChild(o);
    }
    select.value = String(value);
  }

  function modelEntry(name) {
    return state.models.find((m) => m.name === name);
  }

  // --- sampling settings ---------------------------------------------------------------------
  function sampling() {
    const k = Number($("top-k").value), p = Number($("top-p").value);
    return { temperature: Number($("temperature").value), top_k: k > 0 ? k : null, top_p: p < 1 ? p : null, rows: 12 };
  }

  function showSettings() {
    const s = sampling();
    $("temperature-value").textContent = s.temperature.toFixed(2);
    $("top-k-value").textContent = s.top_k === null ? "off" : String(s.top_k);
    $("top-p-value").textContent = s.top_p === null ? "off" : s.top_p.toFixed(2);
  }

  // --- 1: the sentence as chips ----------------------------------------------------------------
  function drawChips() {
    const a = state.analysis;
    const box = $("chips");
    box.replaceChildren();
    const unknown = new Map(a.unknown.map((u) => [u.position, u.word]));
    a.tokens.forEach((tok, i) => {
      const b = el("button", "chip");
      b.type = "button";
      b.dataset.position = i;
      b.appendChild(el("span", "chip-text", shown(tok)));
      if (unknown.has(i)) {
        const word = unknown.get(i);
        b.classList.add("unk");
        b.title = word ? `“${word}” is not in the vocabulary: the model reads ${tok}` : "not in the vocabulary";
        if (word) b.appendChild(el("span", "chip-word", word));
      }
      b.appendChild(el("span", "chip-pos", String(i)));
      b.addEventListener("click", () => pickQuery(i));
      box.appendChild(b);
    });
    markChips();
  }

  // the chips light up with the selected query's weights: the sentence shows where it looks
  function markChips() {
    const w = state.walk;
    const same = w && w.tokens.length === state.analysis.tokens.length;
    const weights = same ? rowOf(w, "pattern", state.query) : null;
    const mask = same ? rowOf(w, "mask", state.query) : null;
    for (const b of $("chips").children) {
      const i = Number(b.dataset.position);
      const on = i === state.query;
      b.classList.toggle("query", on);
      b.setAttribute("aria-pressed", String(on));
      const v = weights && !mask[i] ? weights[i] : 0;
      b.style.background = on ? "" : Grid.weightColor(v);
      b.style.color = on ? "" : Grid.inkFor(v);
    }
  }

  function drawUnknown() {
    const a = state.analysis;
    $("unknown").hidden = !a.unknown_note;
    $("unknown").textContent = a.unknown_note || "";
    const words = a.vocabulary;
    $("vocab").hidden = !words;
    if (!words) return;
    $("vocab-title").textContent = `the ${words.length} words this model knows`;
    const box = $("vocab-words");
    box.replaceChildren();
    for (const word of words) {
      const b = el("button", "word", word);
      b.type = "button";
      b.addEventListener("click", () => {
        const t = $("text");
        t.value = t.value.trim() ? `${t.value.trimEnd()} ${word}` : word;
        t.focus();
      });
      box.appendChild(b);
    }
  }

  // --- 2: one query, every key -------------------------------------------------------------------
  function drawStory() {
    const w = state.walk, q = state.query, n = w.tokens.length;
    const story = $("story");
    story.dataset.layer = w.layer;
    story.dataset.head = w.head;
    story.dataset.query = q;
    const name = shown(w.tokens[q]);
    $("story-title").textContent = `“${name}” asks, every token answers · layer ${w.layer}, head ${w.head}`;
    const s = state.showcase;
    const isShowcase = s && s.questions && s.layer === w.layer && s.head === w.head;
    $("questions").hidden = !isShowcase;
    $("questions").textContent = isShowcase ? `its query asks “${s.questions[0]}”; a key answers “${s.questions[1]}”` : "";
    const looks = w.per_query && w.per_query[q] ? w.per_query[q].looks : null; // as detector_note(walk, q)
    $("head-does").textContent = [w.detectors, looks].filter(Boolean).join(". ");
    const read = w.normed ? "norm(E)" : "E"; // pre-norm models read a normed copy of the stream

    let qkMax = Grid.maxAbsOf([w.q[q]]);
    for (const row of w.k) qkMax = Math.max(qkMax, Grid.maxAbsOf([row]));
    const vMax = Grid.maxAbsOf(w.v);
    $("q-label").textContent = `Q = ${read}·W_Q for “${name}”`;
    $("q-strip").replaceChildren(Grid.strip(w.q[q], qkMax, `the query of “${name}”: ${w.d_head} numbers`));
    $("q-note").textContent = `${w.d_head} numbers` + (w.rotated ? ", turned by position (rotary)" : "");

    const masked = rowOf(w, "mask", q);
    const dots = rowOf(w, "dots", q);
    const weights = rowOf(w, "pattern", q);
    // the same scale as the grid below (every unmasked cell sent), so a colour means one number
    const dotMax = Grid.maxAbsOf(w.dots.map((r, i) => r.filter((_, k) => !w.mask[i][k])));
    const box = $("attend");
    box.replaceChildren();
    box.style.gridTemplateRows = `auto repeat(${n}, var(--row))`;
    for (const h of ["query", "", "key", `K| = ${read}·W_K`, "q·k/√d", "weight", `V| = ${read}·W_V`]) {
      const [short, long] = h.split("|"); // the long part gives way on a phone
      const cell = box.appendChild(el("div", "attend-head", short));
      if (long) cell.appendChild(el("span", "long", long));
    }
    for (let k = 0; k < n; k++) {
      const row = k + 2;
      const qt = el("button", "q-tok" + (k === q ? " on" : ""), shown(w.tokens[k]));
      qt.type = "button";
      qt.style.gridRow = String(row);
      qt.title = `make “${shown(w.tokens[k])}” the query`;
      qt.addEventListener("click", () => pickQuery(k));
      box.appendChild(qt);

      const cells = [];
      const key = el("div", "k-tok", shown(w.tokens[k]));
      cells.push(key);
      const ks = el("div", "k-strip");
      ks.appendChild(Grid.strip(w.k[k], qkMax, `the key of “${shown(w.tokens[k])}”`));
      cells.push(ks);
      const dot = el("div", "dot");
      const weight = el("div", "weight");
      if (masked[k]) {
        dot.classList.add("masked");
        dot.textContent = "−∞";
        dot.title = `q·k/√d = ${Grid.fmt(dots[k])} before the mask: a later token may not inform an earlier one`;
        weight.appendChild(el("span", "weight-value muted", "0 · masked"));
      } else {
        dot.textContent = Grid.fmt(dots[k], 2);
        dot.style.background = Grid.signedColor(dots[k], dotMax);
        dot.style.color = Grid.inkFor(Math.abs(dots[k]) / dotMax);
        const track = el("span", "bar-track");
        const bar = el("span", "bar weight-bar");
        bar.style.width = `${(100 * weights[k]).toFixed(1)}%`;
        track.appendChild(bar);
        weight.appendChild(track);
        weight.appendChild(el("span", "weight-value", Grid.fmt(weights[k])));
      }
      cells.push(dot, weight);
      const vs = el("div", "v-strip");
      vs.appendChild(Grid.strip(w.v[k], vMax, `the value of “${shown(w.tokens[k])}”`));
      cells.push(vs);
      const line = el("div", "key-row-cells");
      line.classList.add("key-row");
      line.dataset.key = k;
      line.dataset.weight = weights[k];
      if (masked[k]) line.dataset.masked = "true";
      line.style.gridRow = String(row);
      for (const c of cells) line.appendChild(c);
      box.appendChild(line);
    }
    box.appendChild(lines(w, q));
    // a long text's keys scroll in a box of their own, opened at the query's row
    const scroller = box.parentElement;
    scroller.classList.toggle("tall", n > 24);
    if (n > 24) {
      const at = box.querySelector(".q-tok.on");
      scroller.scrollTop = at ? Math.max(0, at.offsetTop - scroller.clientHeight / 2) : 0;
    }

    const sum = weights.reduce((x, y) => x + y, 0);
    const where = state.video ? `column “${name}” of the pattern grid below` : `row “${name}” of the pattern grid below`;
    $("story-sum").textContent = `the weights sum to ${sum.toFixed(3)}: this list is ${where}`;
    const notes = $("story-notes"), said = w.per_query ? w.per_query[q] : null;
    notes.replaceChildren();
    for (const [id, text] of [["scores-note", said && said.scores], ["sink-note", said && said.sink]]) {
      if (!text) continue;
      const p = notes.appendChild(el("p", "muted small", text));
      p.id = id;
    }
    const legend = $("story-legend");
    legend.replaceChildren();
    const a = el("div"), b = el("div");
    Grid.legend(a, { kind: "signed", maxAbs: dotMax, masked: w.decoder });
    Grid.legend(b, { kind: "weight", masked: false, label: "weight (line, bar, chip)" });
    legend.append(a, b);
    drawDelta();
    markChips();
  }

  // bertviz-style lines from the query (left) to each key (right): width and opacity = weight
  function lines(w, q) {
    const n = w.tokens.length;
    const box = el("div", "lines");
    box.style.gridRow = `2 / span ${n}`;
    const rowH = 26;
    const g = Grid.svg("svg", { viewBox: `0 0 100 ${n * rowH}`, preserveAspectRatio: "none", "aria-hidden": "true" });
    const y = (i) => (i + 0.5) * rowH;
    const masked = rowOf(w, "mask", q), weights = rowOf(w, "pattern", q);
    for (let k = 0; k < n; k++) {
      if (masked[k]) continue;
      const v = weights[k];
      const line = Grid.svg("line", {
        x1: 0, y1: y(q), x2: 100, y2: y(k),
        stroke: Grid.weightColor(1),
        "stroke-width": (0.5 + 7 * v).toFixed(2),
        "stroke-opacity": (0.12 + 0.88 * v).toFixed(3),
        "vector-effect": "non-scaling-stroke",
        "data-key": k,
        "data-weight": v,
      });
      g.appendChild(line);
    }
    box.appendChild(g);
    return box;
  }

  function drawDelta() {
    const w = state.walk, q = state.query;
    const z = new Array(w.d_head).fill(0);
    rowOf(w, "pattern", q).forEach((p, k) => w.v[k].forEach((v, i) => { z[i] += p * v; }));
    $("z-strip").replaceChildren(Grid.strip(z, Grid.maxAbsOf(w.v), "the weighted sum of the values"));
    // ΔE is added to the residual stream E, so that is what its length is measured against;
    // a pre-norm head read norm(E), a rescaled copy of E: shown as its own, named bar
    const e = w.stream_norm[q], d = w.delta_e_norm[q], r = w.e_norm[q];
    const name = shown(w.tokens[q]);
    const bars = [
      { token: "|E| stream", prob: 0, label: e.toFixed(2) },
      { token: "|ΔE| this head", prob: 0, label: d.toFixed(2) },
    ];
    if (w.normed) bars.push({ token: "|norm(E)| read", prob: 0, label: r.toFixed(2) });
    const top = Math.max(1e-9, e, d, w.normed ? r : 0);
    for (const [i, v] of [e, d, r].entries()) if (bars[i]) bars[i].prob = v / top;
    Grid.bars($("delta"), bars);
    const said = w.per_query && w.per_query[q] ? w.per_query[q].delta : [
      `|ΔE| = ${d.toFixed(2)} is added to the residual stream E of “${name}”, |E| = ${e.toFixed(2)}: ` +
      `${(d / Math.max(e, 1e-9)).toFixed(2)} of its length`];
    said.forEach((line, i) => {
      const p = $("delta").appendChild(el("p", "muted small", line));
      if (i === 0) p.id = "delta-note";
    });
    const dMax = Math.max(1e-9, ...w.delta_e_norm);
    Grid.bars($("delta-all"), w.tokens.map((tok, t) => ({
      token: tok, prob: w.delta_e_norm[t] / dMax,
      label: `|ΔE| ${w.delta_e_norm[t].toFixed(2)} / |E| ${w.stream_norm[t].toFixed(1)}`,
    })));
  }

  // --- 5: the grids --------------------------------------------------------------------------
  // a long text's grids show the window of tokens the server sent rows for (queries and
  // keys alike), around the query; picking a token outside it moves the window there
  function drawGrids() {
    const w = state.walk, n = w.tokens.length;
    const [start, stop] = w.rows;
    const keys = (r) => r.slice(start, stop);
    Grid.fitCells([$("scores"), $("grid")], stop - start);
    const masked = w.dots.map((r, i) => keys(r.map((v, k) => (w.mask[i][k] ? null : v))));
    const pattern = w.pattern.map((r, i) => keys(r.map((v, k) => (w.mask[i][k] ? null : v))));
    const common = {
      tokens: w.tokens.slice(start, stop), offset: start, pattern: w.pattern.map(keys), scores: masked,
      video: state.video, selected: state.query,
      onHover: (h) => { $("hover").textContent = Grid.hoverText(h); },
      onPick: pickQuery,
    };
    drawWindowNote(start, stop, n);
    const scores = Grid.draw($("scores"), { ...common, values: masked, kind: "signed" });
    Grid.legend($("scores-legend"), { kind: "signed", maxAbs: Number(scores.dataset.maxAbs), masked: w.decoder });
    const grid = Grid.draw($("grid"), { ...common, values: pattern, kind: "weight" });
    grid.dataset.layer = w.layer;
    grid.dataset.head = w.head;
    Grid.legend($("grid-legend"), { kind: "weight", masked: w.decoder });
    $("orientation").textContent = `${Grid.orientationText(state.video)}. ` +
      (w.decoder ? "Masked cells: a later token may not inform an earlier one." : "An encoder masks nothing.") +
      " Click a cell to make its query the story's.";
    clearHover(); // the old line may name a token that is gone
  }

  function drawWindowNote(start, stop, n) {
    const box = $("grid-window");
    box.hidden = stop - start >= n;
    box.replaceChildren();
    if (box.hidden) return;
    box.appendChild(el("span", "", `tokens ${start}–${stop - 1} of ${n}, around the query; `));
    const step = Math.max(1, Math.floor((stop - start) / 2));
    for (const [label, to, off] of [["◀ earlier", start - step, start === 0], ["later ▶", stop - 1 + step, stop === n]]) {
      const b = el("button", "link", label);
      b.type = "button";
      b.disabled = off;
      b.addEventListener("click", () => pickQuery(Math.max(0, Math.min(n - 1, to))));
      if (box.children.length > 1) box.appendChild(el("span", "", " · "));
      box.appendChild(b);
    }
    box.appendChild(el("span", "", " (moves the query), or pick any token."));
  }

  function drawThumbs() {
    const a = state.analysis;
    if (!a) return;
    const pick = (l, h) => ($("off-mode").checked ? toggleOff(l, h) : pickHead(l, h));
    Grid.thumbnails($("thumbs"), a.patterns, state.video, [state.layer, state.head], pick, a.thumbnail_tokens);
    markThumbs();
  }

  // a new head only moves the outline: redrawing every thumbnail costs more than a forward pass
  function markThumbs() {
    for (const c of $("thumbs").querySelectorAll("canvas")) {
      const l = Number(c.dataset.layer), h = Number(c.dataset.head);
      c.classList.toggle("selected", l === state.layer && h === state.head);
      c.classList.toggle("off", isOff(l, h));
      c.classList.toggle("changed", state.changed.some(([cl, ch]) => cl === l && ch === h));
    }
    $("switch-off").textContent = isOff(state.layer, state.head) ? "switch this head back on" : "switch this head off";
  }

  function drawHead() {
    drawStory();
    drawGrids();
    markThumbs();
    const w = state.walk;
    status(`${w.tokens.length} tokens · layer ${w.layer}, head ${w.head} · query “${shown(w.tokens[state.query])}”`);
  }

  // --- 3: next token ---------------------------------------------------------------------------
  function drawNext(n) {
    Grid.bars($("next"), n.next.map((x) => ({ token: x.token, prob: x.prob })));
    // a token at probability 0 was either cut (top-k, top-p) or is too unlikely at this
    // temperature for float32 to hold (underflow): say which, so T = 0.1 does not read as a cut
    let kept = `${n.kept} of ${n.vocab_size} tokens have a probability above 0`;
    if (n.temperature === 0) kept = "T = 0: all the weight on the likeliest token";
    else {
      if (n.cut) kept += ` · top-k/top-p cut ${n.cut}`;
      if (n.underflow) {
        kept += ` · ${n.underflow} more are not cut but so unlikely at T = ${n.temperature} that their ` +
          "probability underflows to 0 in float32";
      }
    }
    $("sample").textContent = `${kept} · one sample at these settings: “${shown(n.sample.token)}”`;
  }

  function drawNextCard() {
    const a = state.analysis;
    const card = $("next-card");
    card.classList.toggle("encoder", !a.decoder);
    if (a.decoder) {
      const last = shown(a.tokens[a.tokens.length - 1]);
      $("next-note").textContent = `what the model predicts after the whole sentence (after “${last}”)`;
      drawNext(a);
    } else {
      $("next-note").textContent = "an encoder reads the whole sentence at once: it predicts no next token";
      $("next").replaceChildren();
      $("sample").textContent = "";
    }
  }

  async function loadNext() {
    showSettings();
    if (!state.analysis || !state.analysis.decoder) return;
    const id = ++state.seq.next;
    try {
      const n = await api("/api/next", { model: state.model, text: state.text, ...sampling() });
      if (id === state.seq.next) drawNext(n);
    } catch (err) {
      if (id === state.seq.next) status(err.message, true);
    }
  }

  // --- 4: the MLP --------------------------------------------------------------------------------
  async function loadMLP() {
    const id = ++state.seq.mlp;
    const a = state.analysis;
    $("mlp-title").textContent = `the MLP at “${shown(a.tokens[state.query])}”`;
    $("mlp").replaceChildren(el("p", "muted small", "finding the neurons…"));
    try {
      const m = await api("/api/mlp", { model: state.model, text: state.text, position: state.query, k: 8 });
      if (id === state.seq.mlp) drawMLP(m);
    } catch (err) {
      if (id === state.seq.mlp) $("mlp").replaceChildren(el("p", "error", err.message));
    }
  }

  function drawMLP(m) {
    const box = $("mlp");
    box.replaceChildren();
    const top = Math.max(1e-9, ...m.neurons.map((x) => Math.abs(x.activation)));
    for (const x of m.neurons) {
      const row = el("div", "neuron");
      row.dataset.layer = x.layer;
      row.dataset.neuron = x.neuron;
      row.appendChild(el("span", "neuron-name", `L${x.layer} · #${x.neuron}`));
      const track = el("span", "bar-track");
      const bar = el("span", "bar neuron-bar");
      bar.style.width = `${(100 * Math.abs(x.activation) / top).toFixed(1)}%`;
      track.appendChild(bar);
      row.appendChild(track);
      row.appendChild(el("span", "bar-value", x.activation.toFixed(2)));
      if (x.pushes) {
        const pushes = el("span", "pushes");
        pushes.appendChild(el("span", "muted", "pushes up "));  // given its sign: see the note below
        for (const p of x.pushes) pushes.appendChild(el("span", "push", shown(p.token)));
        row.appendChild(pushes);
      }
      box.appendChild(row);
    }
    const whose = `the ${m.neurons.length} neurons, of ${m.d_mlp} in each layer's MLP, that fire hardest at this token, from any layer`;
    box.appendChild(el("p", "muted small", m.decoder
      ? `${whose}, by the size of their signed activation; “pushes up”: the tokens each neuron's output ` +
        "raises directly through W_U given its sign (a neuron at −2 writes its row twice, negated); " +
        "tokens are word pieces, so “strugg” is the start of a longer word"
      : `${whose} (an encoder has no W_U to read them through)`));
  }

  // --- 7: head detectors, on demand ----------------------------------------------------------
  async function loadDetectors() {
    const id = ++state.seq.detect;
    const model = state.model;
    const button = $("detect");
    button.disabled = true;
    button.textContent = "scoring every head…";
    const box = $("detectors");
    box.replaceChildren();
    try {
      const d = await api(`/api/heads?model=${encodeURIComponent(model)}`);
      const entry = modelEntry(model);
      if (entry) entry.detectors_ready = true;
      if (id === state.seq.detect && model === state.model) drawDetectors(d);
    } catch (err) {
      if (id === state.seq.detect) box.replaceChildren(el("p", "error", err.message));
    } finally {
      if (id === state.seq.detect) {
        button.disabled = false;
        button.textContent = "score every head";
      }
    }
  }

  function drawDetectors(d) {
    const box = $("detectors");
    box.replaceChildren();
    const wrap = el("div", "detector-grid");
    for (const [kind, info] of Object.entries(d.kinds)) {
      const [l, h, s] = info.strongest;
      const fig = el("div", "detector");
      fig.appendChild(el("h3", "", kind));
      fig.appendChild(el("p", "muted small", info.definition));
      fig.appendChild(el("p", "small", s >= d.strong
        ? `strongest: layer ${l}, head ${h} (${s.toFixed(3)})` // 3 places, as the terminal: 0.398 is not 0.40
        : `no head reaches ${d.strong} (best: layer ${l}, head ${h}, ${s.toFixed(3)})`));
      const table = el("table", "scores");
      const head = el("tr");
      head.appendChild(el("th", "", ""));
      info.scores[0].forEach((_, i) => head.appendChild(el("th", "", `h${i}`)));
      table.appendChild(head);
      info.scores.forEach((row, li) => {
        const tr = el("tr");
        tr.appendChild(el("th", "", `L${li}`));
        row.forEach((v, hi) => {
          const td = el("td", li === l && hi === h ? "best" : "", v.toFixed(2));
          td.style.background = Grid.weightColor(v);
          td.style.color = Grid.inkFor(v);
          td.title = `layer ${li}, head ${hi}: click to look at it`;
          td.addEventListener("click", () => pickHead(li, hi));
          tr.appendChild(td);
        });
        table.appendChild(tr);
      });
      const scroll = el("div", "scroll");
      scroll.appendChild(table);
      fig.appendChild(scroll);
      wrap.appendChild(fig);
    }
    box.appendChild(wrap);
    for (const [kind, why] of Object.entries(d.skipped)) box.appendChild(el("p", "muted small", `${kind}: not scored (${why})`));
  }

  // --- the laboratory: switch off, patch, read weights ---------------------------------------------
  function isOff(l, h) {
    return state.off.some(([ol, oh]) => ol === l && oh === h);
  }

  function toggleOff(l, h) {
    state.off = isOff(l, h) ? state.off.filter(([ol, oh]) => ol !== l || oh !== h) : [...state.off, [l, h]];
    runAblation();
  }

  async function runAblation() {
    const id = ++state.seq.ablate;
    if (!state.off.length || !state.analysis || !state.analysis.decoder) {
      state.changed = [];
      $("ablated").hidden = true;
      markThumbs();
      return;
    }
    markThumbs();
    try {
      const r = await api("/api/ablate", { model: state.model, text: state.text, heads: state.off, rows: 8 });
      if (id === state.seq.ablate) drawAblated(r);
    } catch (err) {
      if (id === state.seq.ablate) status(err.message, true);
    }
  }

  function drawAblated(r) {
    state.changed = r.changed;
    $("ablated").hidden = false;
    const off = state.off.map(([l, h]) => `layer ${l} head ${h}`).join(", ");
    $("ablated-note").textContent = `switched off: ${off} · “${shown(r.top.token)}” ${r.top.before.toFixed(3)} → ` +
      `${r.top.after.toFixed(3)} · KL ${r.kl.toFixed(4)} nats · ${r.changed.length} later heads' patterns moved`;
    Grid.bars($("next-before"), r.before.map((x) => ({ token: x.token, prob: x.prob })));
    Grid.bars($("next-after"), r.after.map((x) => ({ token: x.token, prob: x.prob })));
    $("python").textContent = r.python;
    markThumbs();
  }

  async function runPatch() {
    const id = ++state.seq.patch;
    const body = { model: state.model, clean: state.text, corrupt: $("corrupt").value };
    if ($("answer").value) body.answer = $("answer").value;
    if ($("wrong").value) body.wrong = $("wrong").value;
    $("patch-note").textContent = "patching every head…";
    try {
      const r = await api("/api/patch", body);
      if (id === state.seq.patch) drawPatch(r);
    } catch (err) {
      if (id === state.seq.patch) $("patch-note").textContent = err.message;
    }
  }

  function drawPatch(r) {
    $("patch-note").textContent = `logit(“${shown(r.answer.token)}”) − logit(“${shown(r.wrong.token)}”): ` +
      `${r.clean_diff.toFixed(2)} on your sentence, ${r.corrupt_diff.toFixed(2)} corrupted. ` +
      "Rows: layers, columns: heads; each cell: the share restored by that head's output from your sentence." +
      (r.caution ? ` Note: ${r.caution}.` : "");
    const table = el("table", "patch-map");
    const head = el("tr", "");
    head.appendChild(el("th", "", ""));
    r.restored[0].forEach((_, h) => head.appendChild(el("th", "", `h${h}`)));
    table.appendChild(head);
    r.restored.forEach((row, l) => {
      const tr = el("tr", "");
      tr.appendChild(el("th", "", `L${l}`));
      row.forEach((v, h) => {
        const td = el("td", "", v.toFixed(2));
        const a = Math.min(1, Math.abs(v));
        td.style.background = v >= 0 ? `rgba(59,111,182,${a})` : `rgba(200,80,60,${a})`;
        td.dataset.layer = l;
        td.dataset.head = h;
        td.dataset.value = v;
        td.title = `layer ${l}, head ${h}: ${v.toFixed(3)}`;
        td.addEventListener("click", () => pickHead(l, h));
        tr.appendChild(td);
      });
      table.appendChild(tr);
    });
    $("patch-map").replaceChildren(table);
  }

  async function runCircuit() {
    const id = ++state.seq.circuit;
    const a = state.analysis;
    const body = { model: state.model, layer: state.layer, head: state.head, k: 8 };
    if (a && a.ids) body.token_ids = [a.ids[state.query]];
    $("circuit").replaceChildren(el("p", "muted small", "reading the weights…"));
    try {
      const r = await api("/api/circuit", body);
      if (id === state.seq.circuit) drawCircuit(r);
    } catch (err) {
      if (id === state.seq.circuit) $("circuit").replaceChildren(el("p", "error", err.message));
    }
  }

  function drawCircuit(r) {
    const box = $("circuit");
    box.replaceChildren(el("p", "small", `layer ${r.layer}, head ${r.head}`));
    const pairs = (title, rows) => {
      box.appendChild(el("h3", "", title));
      const ul = el("ul", "circuit-list");
      for (const [a, b, v] of rows) ul.appendChild(el("li", "", `“${shown(a)}” → “${shown(b)}”  ${v.toFixed(2)}`));
      box.appendChild(ul);
    };
    for (const [t, row] of Object.entries(r.qk_by_token || {})) pairs(`“${shown(t)}” as a query: its best keys`, row.map(([k, v]) => [t, k, v]));
    for (const [t, row] of Object.entries(r.ov_by_token || {})) pairs(`attending to “${shown(t)}” pushes up`, row.map(([o, v]) => [t, o, v]));
    pairs("QK: the best query → key pairs of the whole vocabulary", r.qk);
    if (r.ov) pairs("OV: attended token → output token it pushes up most", r.ov);
    box.appendChild(el("p", "muted small", "left out: " + r.leaves_out.join("; ")));
  }

  // --- choosing -------------------------------------------------------------------------------
  function pickQuery(i) {
    if (!state.walk) return;
    state.autoQuery = false;
    if (i === state.query) return;
    state.query = i;
    if (!inWindow(state.walk, i)) { // its rows are not here: ask for the window around it
      loadHead().then(loadMLP);
      return;
    }
    drawStory();
    drawGrids();
    status(`${state.walk.tokens.length} tokens · layer ${state.walk.layer}, head ${state.walk.head} · ` +
      `query “${shown(state.walk.tokens[i])}”`);
    loadMLP();
  }

  function pickHead(layer, head) {
    state.layer = layer;
    state.head = head;
    state.pickedHead = true;
    $("layer").value = String(layer);
    $("head").value = String(head);
    loadHead();
  }

  function showcaseNote(s) {
    const p = $("showcase");
    p.hidden = !s;
    p.replaceChildren();
    if (!s) return;
    p.appendChild(el("span", "", `Showcase head: layer ${s.layer}, head ${s.head} — ${s.why}. `));
    if (state.layer !== s.layer || state.head !== s.head) {
      const go = el("button", "link", "look at it");
      go.type = "button";
      go.addEventListener("click", () => pickHead(s.layer, s.head));
      p.appendChild(go);
    }
  }

  function useShowcase(s) {
    state.showcase = s;
    state.layer = s.layer;
    state.head = s.head;
    $("layer").value = String(s.layer);
    $("head").value = String(s.head);
    showcaseNote(s);
  }

  // the showcase head was not known yet: ask for it after the first story is drawn, and move
  // there only if the learner has not picked a head in the meantime
  async function findShowcase(model, text) {
    const p = $("showcase");
    p.hidden = false;
    p.textContent = "looking for the head that shows this model best…";
    try {
      const s = await api("/api/showcase", { model, text });
      if (model !== state.model || text !== state.text) return; // an answer for an older sentence
      if (state.pickedHead) {
        state.showcase = s;
        showcaseNote(s);
      } else {
        useShowcase(s);
        loadHead();
      }
    } catch (err) {
      if (model === state.model && text === state.text) p.hidden = true;
    }
  }

  async function loadHead() {
    const id = ++state.seq.head;
    const query = state.autoQuery ? undefined : state.query; // none: the server picks the one to follow
    const asked = api("/api/head", { model: state.model, text: state.text, layer: state.layer, head: state.head, query });
    markThumbs();
    try {
      const w = await asked;
      if (id !== state.seq.head) return; // a newer request is on its way
      state.walk = w;
      if (!inWindow(w, state.query)) state.query = w.focus; // its rows must be here to draw it
      const moved = state.autoQuery && Number.isInteger(w.query) && w.query < w.tokens.length && w.query !== state.query;
      if (moved) state.query = w.query;
      drawHead();
      if (moved) loadMLP(); // the MLP card follows the query too (a late showcase head can move it)
      if (state.showcase) showcaseNote(state.showcase);
    } catch (err) {
      if (id === state.seq.head) status(err.message, true);
    }
  }

  // fresh: a new model (or the first load): start on its showcase head
  async function analyzeText(fresh) {
    const id = ++state.seq.analyze;
    const model = $("model").value, text = $("text").value;
    status("running…");
    clearHover();
    // a new sentence gets its own showcase note: the last one named the old sentence's positions
    const newText = fresh || state.model !== model || state.text !== text;
    let a;
    try {
      a = await api("/api/analyze", { model, text, ...sampling(), showcase: newText });
    } catch (err) {
      if (id === state.seq.analyze) status(err.message, true);
      return;
    }
    if (id !== state.seq.analyze) return;
    const sameSentence = state.model === model && state.text === text;
    a.patterns = unpack(a.patterns);
    state.analysis = a;
    state.model = model;
    state.text = text;
    if (fresh) {
      state.pickedHead = false;
      state.showcase = null;
      state.layer = 0;
      state.head = 0;
      state.off = [];
      showcaseNote(null);
      if (a.showcase) useShowcase(a.showcase);
    } else if (newText) {
      state.showcase = null;
      showcaseNote(null);
      if (a.showcase && state.pickedHead) {
        state.showcase = a.showcase;
      } else if (a.showcase) {
        useShowcase(a.showcase);
      }
    }
    state.layer = Math.min(state.layer, a.n_layers - 1);
    state.head = Math.min(state.head, a.n_heads - 1);
    fillSelect($("layer"), a.n_layers, "layer", state.layer);
    fillSelect($("head"), a.n_heads, "head", state.head);
    if (!sameSentence) state.autoQuery = true;
    if (!sameSentence || state.query >= a.tokens.length) state.query = a.tokens.length - 1;
    state.walk = null;
    const head = loadHead(); // asked first: the drawing below happens while the server works
    drawChips();
    drawUnknown();
    drawNextCard();
    drawThumbs();
    runAblation(); // the heads switched off stay off on a new sentence of the same model
    await head;
    loadMLP();
    if (state.showcase) showcaseNote(state.showcase);
    if (newText && !a.showcase) findShowcase(model, text);
    const entry = modelEntry(model);
    if (fresh && entry && entry.detectors_ready) loadDetectors();
  }

  async function start() {
    showSettings();
    try {
      state.models = await api("/api/models");
    } catch (err) {
      status(err.message, true);
      return;
    }
    for (const m of state.models) {
      const o = el("option", "", m.note ? `${m.name} (${m.note})` : m.name);
      o.value = m.name;
      $("model").appendChild(o);
    }
    if (!state.models.length) {
      status("this server has no models", true);
      return;
    }
    $("text").value = state.models[0].example;
    await analyzeText(true);
  }

  $("ask").addEventListener("submit", (e) => { e.preventDefault(); analyzeText(false); });
  $("model").addEventListener("change", () => {
    const before = modelEntry(state.model), after = modelEntry($("model").value);
    if (after && (!before || $("text").value === before.example)) $("text").value = after.example;
    $("detectors").replaceChildren();
    analyzeText(true);
  });
  $("layer").addEventListener("change", () => pickHead(Number($("layer").value), state.head));
  $("head").addEventListener("change", () => pickHead(state.layer, Number($("head").value)));
  $("flip").addEventListener("click", () => {
    state.video = !state.video;
    if (!state.walk) return;
    drawStory();
    drawGrids();
    drawThumbs();
  });
  $("detect").addEventListener("click", loadDetectors);
  $("switch-off").addEventListener("click", () => toggleOff(state.layer, state.head));
  $("all-on").addEventListener("click", () => { state.off = []; runAblation(); });
  $("patch-run").addEventListener("click", runPatch);
  $("circuit-run").addEventListener("click", runCircuit);
  let timer = null;
  for (const id of ["temperature", "top-k", "top-p"]) {
    $(id).addEventListener("input", () => { showSettings(); clearTimeout(timer); timer = setTimeout(loadNext, 60); });
  }
  start();
})();
