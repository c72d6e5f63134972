"""The laboratory on SmolLM2-135M (float32, CPU): `patch` over all 30 x 9 heads and
`circuit` on one head (QK and OV top pairs over 49,152 x 49,152, in chunks).

Peers, measured in the same run:
- patch: the plain way, one full forward per head with a hook (timed on 3 heads and
  scaled to 270);
- circuit: the plain chunked search that sorts each whole block (timed on 4 blocks of
  rows and scaled to the whole vocabulary).

    nice -n 5 .venv/bin/python benchmarks/bench_cause.py
"""

import os
import time

import torch

import glassformer as gf
from glassformer.inputs import encode_batch, single_token
from glassformer.lab.circuit import qk_circuit, read_circuits
from glassformer.lab.edit import patch_heads

from _common import env_line

CLEAN = "When Mary and John went to the store, John gave a drink to"
CORRUPT = "When Mary and John went to the store, Mary gave a drink to"


def seconds(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


@torch.inference_mode()
def one_head_at_a_time(model, clean, corrupt, layer: int, heads: int) -> None:
    _, cache = model.run_with_cache(clean, names=f"blocks.{layer}.attn.z")
    z = cache[f"blocks.{layer}.attn.z"]
    for head in range(heads):

        def put(t, _n, head=head):
            t = t.clone()
            t[:, head] = z[:, head]
            return t

        with model.hooks({f"blocks.{layer}.attn.z": put}):
            model(corrupt)


def sorted_blocks(model, layer: int, head: int, blocks: int, chunk: int = 1024) -> None:
    qk = qk_circuit(model, layer, head)
    for i, (_, block) in enumerate(qk.row_chunks(chunk)):
        block.flatten().topk(15)
        if i + 1 == blocks:
            break


def main() -> None:
    model = gf.load("smollm2")
    L, H, V = model.config.n_layers, model.config.n_heads, model.config.vocab_size
    clean, corrupt = encode_batch(model, CLEAN), encode_batch(model, CORRUPT)
    mary, john = single_token(model, " Mary"), single_token(model, " John")
    print(f"SmolLM2-135M, {model.precision}, {env_line()}, load average {os.getloadavg()[0]:.1f}")

    t_patch = seconds(lambda: patch_heads(model, clean, corrupt, mary, john))
    t_plain = seconds(lambda: one_head_at_a_time(model, clean, corrupt, L // 2, 3)) * L * H / 3
    print(f"patch, {L} x {H} heads, {clean.shape[1]} tokens: {t_patch:.1f} s")
    print(f"  one forward per head (3 heads timed, scaled to {L * H}): {t_plain:.1f} s; ratio {t_plain / t_patch:.2f}x")

    t_circuit = seconds(lambda: read_circuits(model, 23, 4, k=15))
    blocks = 4
    t_sorted = seconds(lambda: sorted_blocks(model, 23, 4, blocks)) * (V / (1024 * blocks)) * 2  # QK and OV
    print(f"circuit (QK + OV top 15 of {V} x {V} each), layer 23 head 4: {t_circuit:.1f} s")
    print(f"  sorting every block ({blocks} blocks timed, scaled): {t_sorted:.1f} s; ratio {t_sorted / t_circuit:.2f}x")


if __name__ == "__main__":
    main()
