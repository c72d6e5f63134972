"""A self-contained HTML report: one file with its JavaScript, CSS and data inlined.

It opens from file:// with no network: no CDN, no fonts, no requests. Hover a cell to
see the query and key tokens, the dot product and the weight; click through layers and
heads. Token text is data (JSON), put on the page with textContent only.
"""

from __future__ import annotations

import html
from importlib import resources

import torch

from ..inputs import check_layer_head, tokenizer_of
from ..json_text import to_text
from ..lab.explain import Analysis, analyze, walk_head
from ..lab.readings import detector_note, read_delta, scores_note, sink_note
from ..lab.showcase import query_to_follow
from ..model import Transformer

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy"
      content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<h1>{title}</h1>
<p class="muted" id="source"></p>
<div class="controls">
  <span>layer <span id="layers"></span></span>
  <span>head <span id="heads"></span></span>
  <button id="flip">switch orientation</button>
</div>
<section class="card">
<h2 id="which"></h2>
<p class="muted" id="orientation"></p>
<div class="grids">
  <figure id="scores-section">
    <figcaption>Q·Kᵀ/√d — the dot products, then the mask</figcaption>
    <div class="scroll"><div id="scores"></div></div>
    <div id="scores-legend"></div>
  </figure>
  <figure>
    <figcaption>pattern = softmax — the weights each query gives</figcaption>
    <div class="scroll"><div id="grid"></div></div>
    <div id="grid-legend"></div>
  </figure>
</div>
<p id="hover" class="hover"></p>
<div id="reading" class="reading"></div>
</section>
<section class="card"><h2>every head</h2><div class="scroll"><div id="thumbs"></div></div></section>
<section class="card" id="next-section"><h2>next token (T = 1)</h2><div id="next"></div></section>
<script id="glassformer-data" type="application/json">{data}</script>
<script>{grid_js}</script>
<script>{report_js}
document.getElementById("source").textContent = JSON.parse(
  document.getElementById("glassformer-data").textContent).text;</script>
</body>
</html>
"""


def static_text(name: str) -> str:
    return resources.files("glassformer.viz").joinpath("static").joinpath(name).read_text(encoding="utf-8")


def json_for_script(value) -> str:
    """JSON that cannot end its <script> element early: <, > and & become \\u escapes."""
    return to_text(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def rounded(t: torch.Tensor, digits: int = 4):
    """Nested lists with masked (−∞) cells as null, which JSON can carry."""
    t = t.double().round(decimals=digits)
    finite = torch.isfinite(t)
    if bool(finite.all()):
        return t.tolist()
    out = torch.where(finite, t, torch.nan).tolist()

    def clean(x):
        return [clean(v) for v in x] if isinstance(x, list) else (None if x != x else x)

    return clean(out)


def report_data(analysis: Analysis, text: str, *, top_k: int = 10, token_texts=None, start=(0, 0)) -> dict:
    data = {
        "text": text,
        "tokens": analysis.tokens,
        "n_layers": analysis.patterns.shape[0],
        "n_heads": analysis.patterns.shape[1],
        "causal": analysis.causal,
        "patterns": rounded(analysis.patterns),
        "scores": rounded(analysis.scores) if analysis.scores is not None else None,
        "start": list(start),
        "next": None,
    }
    if analysis.last_logits is not None and token_texts is not None:
        probs = torch.softmax(analysis.last_logits, -1).topk(top_k)
        data["next"] = [
            {"token": t, "prob": round(p, 5)}
            for t, p in zip(token_texts(probs.indices.tolist()), probs.values.tolist())
        ]
    return data


def report_html(
    model: Transformer, text: str, *, title: str = "glassformer: attention", layer: int = 0, head: int = 0
) -> str:
    """The whole report for `text` on `model`, as one HTML string."""
    check_layer_head(model, layer, head)
    analysis = analyze(model, text, scores=True)
    data = report_data(analysis, text, token_texts=tokenizer_of(model).token_texts, start=(layer, head))
    data["reading"] = head_reading(model, text, layer, head)
    return PAGE.format(
        title=html.escape(title),
        css=static_text("style.css"),
        data=json_for_script(data),
        grid_js=static_text("grid.js"),
        report_js=static_text("report.js"),
    )


def head_reading(model: Transformer, text: str, layer: int, head: int) -> dict:
    """The lines `explain` ends with, for the head the report opens on, at the query it follows."""
    walk = walk_head(model, text, layer, head)
    q = query_to_follow(model, walk)
    token = walk.tokens[q]
    lines = [f"following the query “{token}” (position {q})", detector_note(walk, q)]
    lines += [n for n in (scores_note(walk, q), sink_note(walk, q)) if n]
    lines += read_delta(model, walk, q).sentences(token)
    return {"layer": layer, "head": head, "query": q, "lines": lines}


class AttentionView:
    """A pattern you can look at: renders itself in Jupyter as the interactive report.

    gf.viz.page.AttentionView(model, "a fluffy blue creature")   # last expression in a cell
    """

    def __init__(self, model, text: str, *, layer: int = 0, head: int = 0) -> None:
        self.model, self.text, self.layer, self.head = model, text, layer, head
        self.analysis = analyze(model, text)

    @property
    def pattern(self) -> torch.Tensor:
        return self.analysis.patterns[self.layer, self.head]  # [query, key]

    def _repr_html_(self) -> str:
        page = report_html(self.model, self.text, layer=self.layer, head=self.head)
        # an iframe keeps the page's script and styles to itself inside the notebook
        return (
            f'<iframe srcdoc="{html.escape(page, quote=True)}" '
            'style="width:100%;height:720px;border:0" sandbox="allow-scripts"></iframe>'
        )

    def __repr__(self) -> str:
        return f"AttentionView({len(self.analysis.tokens)} tokens, layer {self.layer}, head {self.head})"
