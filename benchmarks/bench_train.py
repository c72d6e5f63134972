"""Training on nanoGPT's CPU Shakespeare configuration (char-level, 4 layers, 4 heads,
d_model 128, context 64, batch 12, AdamW, data/tinyshakespeare.txt):

1. tokens/s of glassformer vs Hugging Face GPT2LMHeadModel of the same shape with the
   same optimizer and the same batches, each in fp32 and under bf16 autocast, measured in
   turns in one run; glassformer's trainer default (`--precision auto`) is set against
   the faster of Hugging Face's two;
2. the full 2000-iteration run (lr 1e-3 -> 1e-4 cosine, warmup 100, dropout 0) through
   `glassformer.train`, its final validation loss (nanoGPT reports 1.88) and wall time.

Both use the `shakespeare-char` preset: nanoGPT's shape with its own W_U instead of W_Eᵀ
(the Hugging Face model is untied to match, so the parameters are the same); `--tied` ties
both, as nanoGPT does.

    .venv/bin/python benchmarks/bench_train.py [--data PATH] [--skip-full] [--seed S] [--tied]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import glassformer as gf
from glassformer.hardware import resolve_precision
from glassformer.train import TrainConfig, train
from glassformer.train.data import Batcher, prepare
from glassformer.train.devices import autocast_for

from _common import env_line

DEFAULT_DATA = Path(__file__).resolve().parents[1] / "data" / "tinyshakespeare.txt"


def speed_race(data_path: Path, tied: bool, chunk: int = 10, rounds: int = 30) -> None:
    """Both models in both precisions, taking turns every `chunk` steps so that the shared
    machine's drift hits all four alike; each one's speed is its median chunk.
    glassformer's trainer default (`auto`) is compared with the faster of Hugging Face's two."""
    from transformers import GPT2Config, GPT2LMHeadModel

    data = prepare(str(data_path), "char")
    V = data.tokenizer.vocab_size
    cfg = gf.PRESETS["shakespeare-char"].replace(
        vocab_size=V, tied_unembedding=tied, bias=True
    )  # GPT-2 always has biases
    batches = Batcher(data.train, 64, 12, seed=0)
    xs = [batches.next() for _ in range(chunk)]
    auto = resolve_precision("auto", "cpu")

    def contender(kind: str, precision: str):
        torch.manual_seed(0)
        if kind == "glassformer":
            model = gf.Transformer(cfg)
            logits_of = model
        else:
            model = GPT2LMHeadModel(
                GPT2Config(
                    vocab_size=V,
                    n_positions=64,
                    n_embd=128,
                    n_layer=4,
                    n_head=4,
                    resid_pdrop=0,
                    embd_pdrop=0,
                    attn_pdrop=0,
                    bos_token_id=None,
                    eos_token_id=None,  # not 50256
                    tie_word_embeddings=cfg.tied_unembedding,
                )
            )
            logits_of = lambda x: model(x).logits  # noqa: E731
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, fused=True)
        autocast = autocast_for(precision, "cpu")  # what the trainer wraps each forward in
        model.train()

        def run():
            for x, y in xs:
                with autocast():
                    logits = logits_of(x)
                loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                opt.zero_grad(set_to_none=True)

        return model, run

    runs, sizes = {}, set()
    for kind in ("glassformer", "hf"):
        for precision in ("fp32", "bf16"):
            model, runs[kind, precision] = contender(kind, precision)
            sizes.add(sum(p.numel() for p in model.parameters()))
    assert len(sizes) == 1, "the two models must have the same parameters"
    times = {k: [] for k in runs}
    for run in runs.values():
        run()  # warm-up
    for _ in range(rounds):
        for key, run in runs.items():
            t = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - t)
    tps = {k: chunk * 12 * 64 / statistics.median(v) for k, v in times.items()}
    for (kind, precision), v in tps.items():
        print(f"  {kind:12s} {precision}: {v:8,.0f} tokens/s")
    hf_best = max(("fp32", "bf16"), key=lambda p: tps["hf", p])
    print(
        f"training tokens/s: glassformer's default here ({auto}) {tps['glassformer', auto]:,.0f}   "
        f"HF GPT2LMHeadModel at its faster ({hf_best}) {tps['hf', hf_best]:,.0f}   "
        f"speed-up {tps['glassformer', auto] / tps['hf', hf_best]:.2f}x   "
        f"(fp32 vs fp32 {tps['glassformer', 'fp32'] / tps['hf', 'fp32']:.2f}x)"
    )


@torch.no_grad()
def whole_split_loss(model, ids: torch.Tensor, context: int = 64) -> float:
    """Mean loss over every non-overlapping window of the split (no sampling noise)."""
    n = (len(ids) - 1) // context
    x, y = ids[: n * context].view(n, context), ids[1 : n * context + 1].view(n, context)
    total = sum(
        F.cross_entropy(model(x[i : i + 256]).flatten(0, 1), y[i : i + 256].flatten(), reduction="sum").item()
        for i in range(0, n, 256)
    )
    return total / (n * context)


def full_run(data_path: Path, seed: int, tied: bool) -> None:
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            data=str(data_path),
            out=out + "/run",
            tokenizer="char",
            preset="shakespeare-char",
            steps=2000,
            batch_size=12,
            lr=1e-3,
            min_lr=1e-4,
            warmup=100,
            weight_decay=0.1,
            beta2=0.99,
            grad_clip=1.0,
            eval_every=250,
            eval_batches=200,
            dropout=0.0,
            seed=seed,
            tied_unembedding=tied,
        )
        t = time.perf_counter()
        result = train(cfg, progress=False)
        wall = time.perf_counter() - t
        model = gf.load(out + "/run/latest").eval()
        whole = whole_split_loss(model, prepare(str(data_path), "char").val)
    last = result.history[-1]
    print(
        f"2000 iterations, seed {seed}: val loss {whole:.4f} over the whole validation split "
        f"({last['val_loss']:.4f} on the trainer's 200 fixed batches; nanoGPT reports 1.88 from 20 random ones), "
        f"train loss {last['train_loss']:.4f}, wall {wall:.0f} s, {last['tokens_per_s']:,.0f} tokens/s"
    )


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, default=DEFAULT_DATA)
    p.add_argument("--skip-full", action="store_true")
    p.add_argument("--seed", type=int, default=1337, help="seed of the 2000-iteration run (nanoGPT's is 1337)")
    p.add_argument("--tied", action="store_true", help="W_U = W_Eᵀ in both, as nanoGPT has it")
    args = p.parse_args()
    if not args.data.is_file():
        raise SystemExit(f"no Shakespeare at {args.data}; pass --data PATH")
    print(f"nanoGPT Shakespeare-char shape, {env_line()}")
    speed_race(args.data, args.tied)
    if not args.skip_full:
        full_run(args.data, args.seed, args.tied)


if __name__ == "__main__":
    main()
