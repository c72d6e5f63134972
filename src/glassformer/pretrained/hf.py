"""Hugging Face model directories and hub ids: config.json, weights, tokenizer files.

Every file a directory names is checked to lie inside it (a shard index cannot send us
to another directory), every malformed file gets one line naming it, and pickled
weights are read with weights_only=True, so no object but a tensor is ever rebuilt.
"""

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import torch

from ..config import GlassformerError, ModelConfig
from ..files import read_json, read_safetensors
from ..tokenizer import HFTokenizer, load_tokenizer
from . import bert, gpt2, llama

log = logging.getLogger(__name__)

# model_type in config.json -> the pure converter for that family
CONVERTERS = {"gpt2": gpt2, "bert": bert, "llama": llama}
SUPPORTED = (
    "gpt2 (GPT2LMHeadModel, distilgpt2), bert (BertModel, all-MiniLM) and "
    "llama (LlamaForCausalLM: SmolLM2, TinyLlama, Llama)"
)


def read_config(path: Path) -> dict:
    config = read_json(path / "config.json")
    if not isinstance(config, dict):
        raise GlassformerError(f"{path / 'config.json'} is not a JSON object")
    return config


def converter_for(path: Path, hf_config: dict):
    model_type = hf_config.get("model_type")
    if model_type not in CONVERTERS:
        raise GlassformerError(
            f"unsupported architecture {model_type or 'unknown'!r} in {path}; supported: {SUPPORTED}"
        )
    return CONVERTERS[model_type]


def config_of(path: Path) -> ModelConfig:
    """Our config for the Hugging Face directory at `path`, without reading its weights."""
    hf_config = read_config(path)
    return _config(converter_for(path, hf_config), hf_config, path)


def _config(converter, hf_config: dict, path: Path) -> ModelConfig:
    try:
        return converter.config_from_hf(hf_config)
    except (KeyError, TypeError) as err:
        raise GlassformerError(f"{path / 'config.json'} lacks or mistypes a field the model needs ({err})") from None


def inside(path: Path, name: object, what: str) -> Path:
    """`path / name`, refused unless it resolves to a file inside `path`."""
    if not isinstance(name, str) or not name:
        raise GlassformerError(f"{what} names {name!r}, which is not a file name")
    file = (path / name).resolve()
    if not file.is_relative_to(path.resolve()):
        raise GlassformerError(f"{what} names {name!r}, outside the model directory {path}; refused")
    return file


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").is_file():
        return read_safetensors(path / "model.safetensors")
    index_file = path / "model.safetensors.index.json"
    if index_file.is_file():
        index = read_json(index_file)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise GlassformerError(f'{index_file} has no "weight_map" of tensor names to shard files')
        shards = sorted({inside(path, shard, str(index_file)) for shard in weight_map.values()})
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state |= read_safetensors(shard)
        return state
    if (path / "pytorch_model.bin").is_file():
        return read_torch_bin(path / "pytorch_model.bin")
    raise GlassformerError(
        f"{path} has no weights: expected model.safetensors, model.safetensors.index.json or pytorch_model.bin"
    )


def read_torch_bin(file: Path) -> dict[str, torch.Tensor]:
    """A pickled state dict, read with weights_only=True: only tensors and plain
    containers are rebuilt, and any other object is refused before it is created."""
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, OSError):
        # torch's own message advises weights_only=False, the very thing we refuse to do
        raise GlassformerError(
            f"refused {file}: it is not a file of tensors as torch.save writes them (it is a plain pickle, "
            "holds other objects, or is damaged), and reading it any further could run code hidden in it; "
            "convert it to model.safetensors with a tool you trust"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GlassformerError(f"refused {file}: it does not hold a dictionary of tensors")
    return state


def load_dir(path: Path):
    """(config, our state dict, tokenizer, extras) for a Hugging Face directory."""
    hf_config = read_config(path)
    converter = converter_for(path, hf_config)
    config = _config(converter, hf_config, path)
    state = converter.convert(config, read_weights(path))
    tokenizer = read_tokenizer(path)
    extras = {}
    st_config = path / "sentence_bert_config.json"
    if st_config.is_file():
        st = read_json(st_config)
        length = st.get("max_seq_length") if isinstance(st, dict) else None
        if length is not None and not (isinstance(length, int) and length > 0):
            raise GlassformerError(f"{st_config}: max_seq_length must be a positive whole number")
        extras["sentence_max_length"] = length
    return config, state, tokenizer, extras


def read_tokenizer(path: Path) -> HFTokenizer | None:
    """The directory's tokenizer with its own padding/truncation switched off: we pad
    batches ourselves and refuse (never silently cut) text longer than the context."""
    tok = None
    if (path / "tokenizer.json").is_file():
        loaded = load_tokenizer(path / "tokenizer.json")
        if not isinstance(loaded, HFTokenizer):
            raise GlassformerError(f"{path / 'tokenizer.json'} is not a Hugging Face tokenizer")
        tok = loaded.tok
    elif (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers

        try:
            bpe = models.BPE.from_file(str(path / "vocab.json"), str(path / "merges.txt"))
        except Exception as err:  # the Rust library raises plain Exceptions
            raise GlassformerError(f"{path / 'vocab.json'} or merges.txt could not be read ({err})") from None
        tok = Tokenizer(bpe)
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
    elif (path / "vocab.txt").is_file():
        from tokenizers.implementations import BertWordPieceTokenizer

        lower = True
        cfg = path / "tokenizer_config.json"
        if cfg.is_file():
            settings = read_json(cfg)
            asked = settings.get("do_lower_case", True) if isinstance(settings, dict) else None
            if not isinstance(asked, bool):
                raise GlassformerError(f"{cfg}: do_lower_case must be true or false")
            lower = asked
        try:
            tok = BertWordPieceTokenizer(str(path / "vocab.txt"), lowercase=lower)._tokenizer
        except Exception as err:
            raise GlassformerError(f"{path / 'vocab.txt'} could not be read ({err})") from None
    if tok is None:
        log.warning("no tokenizer files in %s; model.tokenizer is None", path)
        return None
    tok.no_padding()
    tok.no_truncation()
    return HFTokenizer(tok)


HUB_FILES = [
    "config.json",
    "*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "vocab.txt",
    "sentence_bert_config.json",
    "special_tokens_map.json",
]


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
        f"on a connected machine run `huggingface-cli download {repo_id}` or pass a local directory"
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
