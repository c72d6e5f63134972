"""glassformer: a transformer you can see through.

import glassformer as gf
model = gf.load("smollm2")                # or minilm, lesson:adjectives, a directory, a .gguf file
ids = model.tokenizer.encode("The capital of France is")
logits, cache = model.run_with_cache([ids], names="blocks.*.attn.pattern")
gf.generate(model, ids, max_new_tokens=20, temperature=0)
"""

from importlib.metadata import version

from .checkpoint import save
from .config import PRESETS, SHAPE_ONLY, GlassformerError, ModelConfig, preset
from .generate import generate
from .model import Transformer
from .params import count_params
from .pretrained import load
from .sentences import embed_sentences

__version__ = version("glassformer")

__all__ = [
    "PRESETS",
    "SHAPE_ONLY",
    "GlassformerError",
    "ModelConfig",
    "Transformer",
    "count_params",
    "embed_sentences",
    "generate",
    "load",
    "preset",
    "save",
]
