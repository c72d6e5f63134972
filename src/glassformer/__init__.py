"""glassformer: a transformer you can see through.

    import glassformer as gf
    model = gf.load("minilm")                 # or a checkpoint dir, a hub id, "random:gpt2"
    out, cache = model.run_with_cache(ids, names="blocks.*.attn.pattern")
"""

from .config import PRESETS, SHAPE_ONLY, GlassformerError, ModelConfig, preset
from .model import Transformer, softmax_with_temperature
from .params import count_params

__version__ = "0.1.0"


def load(name_or_path, **kwargs):
    """A model with its tokenizer attached: a checkpoint or Hugging Face directory, a hub
    id, "minilm", "random:PRESET", or "lesson:NAME" (trained on first use, then cached).
    See `glassformer.pretrained.load`."""
    if str(name_or_path).startswith("lesson:"):
        from .pretrained import load_dir
        from .train.lesson_models import lesson_model_dir

        return load_dir(lesson_model_dir(str(name_or_path), **kwargs))
    from .pretrained import load as _load

    return _load(name_or_path, **kwargs)


def save(model, path, **kwargs):
    """Write `model` as a glassformer checkpoint directory; see `glassformer.checkpoint.save`."""
    from .checkpoint import save as _save

    return _save(model, path, **kwargs)


__all__ = [
    "ModelConfig",
    "PRESETS",
    "SHAPE_ONLY",
    "GlassformerError",
    "Transformer",
    "count_params",
    "load",
    "preset",
    "save",
    "softmax_with_temperature",
]
