"""Which engine generates: transformers (loop/models/decode.py, the CPU path) or vLLM on CUDA.

    backend = resolve_backend(task.settings.generation.backend)   # "hf" or "vllm"
    generator = load_generator(backend, "smollm2-135m-instruct+runs/a1")
    outputs = generator.generate(prompts, max_new_tokens=64, batch_size=16, stop_at_json=False)

"auto" picks vLLM only when CUDA is available and the vllm package is importable; asking for
"vllm" without either is a ConfigError naming what is missing. Both generators return
decode.GenOutput records in input order, cut by the same rule (decode.finish).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from loop.core.errors import ConfigError
from loop.models.decode import GenOutput, OnBatch

Backend = Literal["hf", "vllm"]
GPU_INSTALL = "pip install 'evalloop[gpu]'"


@functools.cache  # torch is imported only when a backend is resolved
def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None  # found, not imported: it is heavy


def resolve_backend(setting: str) -> Backend:
    """The backend a setting means on this machine: "auto" | "hf" | "vllm" -> "hf" | "vllm"."""
    if setting == "hf":
        return "hf"
    if setting not in ("auto", "vllm"):
        raise ConfigError(f"Unknown generation backend '{setting}' (known: auto, hf, vllm).")
    if setting == "auto":
        return "hf" if vllm_missing() else "vllm"
    require_vllm("The vllm generation backend", "'hf' (or 'auto')")
    return "vllm"


def require_vllm(what: str, instead: str) -> None:
    """ConfigError naming what vLLM lacks here (CUDA, the package) and how to get it."""
    if missing := vllm_missing():
        raise ConfigError(f"{what} needs {missing}. Install the GPU extra with `{GPU_INSTALL}` "
                          f"on a CUDA machine, or use backend {instead}.")


def vllm_missing() -> str | None:
    """What vLLM lacks on this machine, in words, or None when it can run."""
    lacks = [what for what, ok in (("CUDA (no GPU is visible to torch)", cuda_available()),
                                   ("the vllm package (not installed)", vllm_installed())) if not ok]
    return " and ".join(lacks) or None


class Generator(Protocol):
    def generate(self, prompts: Sequence[str], max_new_tokens: int, batch_size: int,
                 progress: bool = True, desc: str = "generating",
                 stop_at_json: bool = False, on_batch: OnBatch | None = None
                 ) -> list[GenOutput]: ...


@dataclass(frozen=True)
class HFGenerator:
    """Transformers on the model's device, with the shared-prefix KV cache."""

    lm: object  # loading.LoadedModel

    def generate(self, prompts, max_new_tokens, batch_size, progress=True, desc="generating",
                 stop_at_json=False, on_batch=None) -> list[GenOutput]:
        from loop.models.decode import generate

        return generate(self.lm, prompts, max_new_tokens, batch_size, progress=progress,
                        desc=desc, stop_at_json=stop_at_json, on_batch=on_batch)


def load_generator(backend: Backend, model_name: str, lm=None) -> Generator:
    """A loaded generator (a model that cannot load fails here, before the caller writes).
    `lm`: an already loaded HF model, used by the hf backend instead of loading one."""
    if backend == "vllm":
        from loop.models.vllm_backend import VllmGenerator

        return VllmGenerator.load(model_name)
    from loop.models.loading import load_model

    return HFGenerator(lm or load_model(model_name))
