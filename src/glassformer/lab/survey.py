"""Every head surveyed: each detector's [layer, head] table of what its pattern does, and
the switch-off column of what the model loses without it (the `heads` command, the
explorer's "score every head")."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import GlassformerError
from ..model import Transformer
from .heads import STRONG, adjective_noun, one_pass, random_repeats, speaks_adjectives, strongest
from .switch_off import CANDIDATES, FULL_SWEEP, switch_off_heads, switch_off_table, switch_off_texts


@dataclass
class Detection:
    """Every detector's table that could be scored, and why the others were skipped."""

    tables: dict[str, torch.Tensor]
    skipped: dict[str, str] = field(default_factory=dict)
    switch_off: torch.Tensor | None = None  # [layer, head] mean KL on the next token with the head's z at zero
    switch_off_on: str = ""  # the texts that KL was measured on, or why it was not

    def summary(self) -> list[str]:
        """One line per kind: every head that reaches STRONG, strongest first, else the best
        one and that it falls short (to three places, so 0.398 does not read as 0.40)."""
        lines = []
        for kind, table in self.tables.items():
            layer, head, score = strongest(table)
            if score >= STRONG:
                found = sorted(
                    ((float(v), divmod(i, table.shape[1])) for i, v in enumerate(table.flatten())), reverse=True
                )
                named = [f"layer {lh[0]}, head {lh[1]} ({v:.3f})" for v, lh in found if v >= STRONG]
                more = f"; and {len(named) - 4} more" if len(named) > 4 else ""
                lines.append(f"{kind} head{'s' if len(named) > 1 else ''}: " + "; ".join(named[:4]) + more)
            else:
                lines.append(f"{kind}: no head reaches {STRONG} (best: layer {layer}, head {head}, {score:.3f})")
        lines += [f"{kind}: not scored ({why})" for kind, why in self.skipped.items()]
        return lines


def detect_all(model: Transformer, ids: torch.Tensor | None = None) -> Detection:
    """Every detector that applies to this model, on `ids` (else on repeated random
    segments); one that cannot be scored on this text is skipped with the reason."""
    probe = ids
    if probe is None:  # a model of many heads (SmolLM2's 270) gets half the rows: averages of
        # 768 positions are steady, and the first "score every head" stays within seconds
        big = model.config.n_layers * model.config.n_heads > FULL_SWEEP
        probe = random_repeats(model, n_each=3 if big else 6)
    detectors = one_pass(model, probe)
    if speaks_adjectives(model):
        detectors["adjective-noun"] = lambda: adjective_noun(model)
    found = Detection({})
    for kind, score in detectors.items():
        try:
            found.tables[kind] = score()
        except GlassformerError as err:
            found.skipped[kind] = str(err)
    if model.config.causal:
        only = switch_off_heads(model, found.tables)
        texts, where, found.switch_off_on = switch_off_texts(model, ids, None if only is None else len(only))
        found.switch_off = switch_off_table(model, texts, where, only)
        if only is not None:
            found.switch_off_on += f"; only the {CANDIDATES} best heads of each detector (the others: ·)"
    else:
        found.switch_off_on = "not measured: an encoder predicts no next token"
    return found
