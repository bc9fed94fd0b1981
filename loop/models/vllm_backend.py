"""Greedy generation through vLLM on CUDA (the `.[gpu]` extra); the CPU path is decode.py.

    generator = VllmGenerator.load("smollm2-135m-instruct+runs/a1")
    outputs = generator.generate(prompts, max_new_tokens=64, batch_size=16, stop_at_json=True)

One `vllm.LLM` engine per process and base (bf16, vLLM's own prefix caching, LoRA enabled so a
base and its adapters share the engine); an adapter runs as a `LoRARequest`. Prompts go in as the
HF tokenizer's ids (no special tokens added, as decode.py encodes them) and the new token ids come
back through decode.finish, so EOS, the stop strings and the JSON cut (`stop_at_json`) are applied
exactly as on the HF path. vLLM has no "JSON closed" stop, so with `stop_at_json` a row may decode
past its answer up to max_new_tokens; the text and token count are cut afterwards. `batch_size`
is not used: vLLM schedules its own batches. vllm is imported only inside functions, so CPU
installs never need it.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from loop.core.errors import ModelError
from loop.core.prompts import stop_strings
from loop.models.decode import GenOutput, finish

# vLLM accepts only these max_lora_rank values; an adapter's rank is rounded up to one.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
MIN_LORA_RANK = 16  # engines start at vLLM's default, so the usual adapters reuse the base's
# vLLM preallocates this share of GPU memory for weights + KV cache; a cycle trains on the same
# GPU in the same process after evaluating, so it must not take the default 90%.
GPU_MEMORY_SHARE = 0.5

# Prompts per engine call: each call's outputs go to `on_batch` (stored by the caller), so an
# interrupted run keeps all but the last chunk. Tasks up to this size run in one call, as before.
VLLM_CHUNK = 4096

_ENGINES: dict[tuple[str, int], Any] = {}  # one live engine per process (each holds GPU memory)


# ---------------------------------------------------------------------------- pure helpers

def lora_rank(adapter_config: dict) -> int:
    """The engine's max_lora_rank for an adapter's adapter_config.json (its largest rank,
    per-module rank_pattern included), rounded up to a value vLLM accepts."""
    ranks = [int(adapter_config.get("r", 8))] + [int(r) for r in
                                                 (adapter_config.get("rank_pattern") or {}).values()]
    wanted = max(ranks + [MIN_LORA_RANK])
    fits = [r for r in VLLM_LORA_RANKS if r >= wanted]
    if not fits:
        raise ModelError(f"LoRA rank {wanted} is above vLLM's largest ({VLLM_LORA_RANKS[-1]}); "
                         "evaluate this adapter with [generation] backend = \"hf\".")
    return fits[0]


def in_request_order(request_outputs: Sequence[Any]) -> list[Any]:
    """vLLM's outputs in submission order: by numeric request id (LLM.generate numbers requests
    as it adds them); ids that are not numbers keep the order they came in."""
    try:
        return sorted(request_outputs, key=lambda o: int(o.request_id))
    except (TypeError, ValueError):
        return list(request_outputs)


def finish_outputs(request_outputs: Sequence[Any], tokenizer, eos_ids: Sequence[int],
                   stops: Sequence[str], stop_at_json: bool, elapsed_s: float
                   ) -> list[GenOutput]:
    """GenOutput records, in input order, from vLLM RequestOutputs: each completion's token ids
    cut by decode.finish (EOS, stop strings, JSON close), the wall time shared evenly."""
    ordered = in_request_order(request_outputs)
    share = elapsed_s / max(len(ordered), 1)
    results = []
    for out in ordered:
        text, n_out = finish(tokenizer, list(out.outputs[0].token_ids), eos_ids, stops,
                             stop_at_json)
        results.append(GenOutput(text=text, latency_s=share,
                                 prompt_tokens=len(out.prompt_token_ids), output_tokens=n_out))
    return results


# ---------------------------------------------------------------------------- the engine

@dataclass(frozen=True)
class VllmGenerator:
    llm: Any  # vllm.LLM
    tokenizer: Any  # the base's HF tokenizer: encodes prompts, decodes outputs
    eos_ids: tuple[int, ...]
    lora_request: Any | None  # vllm.lora.request.LoRARequest for a BASE+ADAPTER name

    @classmethod
    def load(cls, model_name: str) -> VllmGenerator:
        from loop.models.loading import base_path, fingerprint, load_tokenizer, parse_model_name

        spec = parse_model_name(model_name)
        path = base_path(spec.base)
        rank = MIN_LORA_RANK
        lora_request = None
        if spec.adapter is not None:
            rank = lora_rank(json.loads((spec.adapter / "adapter_config.json").read_text()))
            from vllm.lora.request import LoRARequest

            # vLLM caches adapters by int id: derive it from the adapter's content hash, so
            # a retrained adapter at the same path is never served from the old one.
            adapter_hash = fingerprint(spec).split("+", 1)[1]
            lora_request = LoRARequest(spec.adapter.name, int(adapter_hash[:7], 16) + 1,
                                       str(spec.adapter))
        tokenizer = load_tokenizer(spec)
        return cls(llm=_engine(path, rank), tokenizer=tokenizer,
                   eos_ids=tuple(_eos_ids(tokenizer, path)), lora_request=lora_request)

    def generate(self, prompts: Sequence[str], max_new_tokens: int, batch_size: int = 0,
                 progress: bool = True, desc: str = "generating",
                 stop_at_json: bool = False, on_batch=None) -> list[GenOutput]:
        """Greedy outputs for `prompts`, in input order (batch_size: vLLM batches itself);
        `on_batch` gets each chunk of VLLM_CHUNK prompts' outputs as soon as it is done."""
        from vllm import SamplingParams

        stops = stop_strings(self.tokenizer)
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens,
                                stop=list(stops) or None)
        results: list[GenOutput] = []
        for start in range(0, len(prompts), VLLM_CHUNK):
            chunk = prompts[start:start + VLLM_CHUNK]
            inputs = [{"prompt_token_ids": self.tokenizer(p, add_special_tokens=False)
                       ["input_ids"]} for p in chunk]
            t0 = time.perf_counter()
            outputs = self.llm.generate(inputs, params, use_tqdm=progress,
                                        lora_request=self.lora_request)
            done = finish_outputs(outputs, self.tokenizer, self.eos_ids, stops, stop_at_json,
                                  time.perf_counter() - t0)
            if on_batch is not None:
                on_batch(list(enumerate(done, start)))
            results += done
        return results


def _engine(path: str, max_lora_rank: int):
    """The process's engine for a base; a different base or a larger rank replaces it."""
    key = (path, max_lora_rank)
    if key not in _ENGINES:
        _ENGINES.clear()  # drop the old engine first: both would not fit in GPU_MEMORY_SHARE
        gc.collect()
        from vllm import LLM

        try:
            _ENGINES[key] = LLM(model=path, tokenizer=path, dtype="bfloat16", seed=0,
                                enable_lora=True, max_lora_rank=max_lora_rank,
                                enable_prefix_caching=True, trust_remote_code=False,
                                gpu_memory_utilization=GPU_MEMORY_SHARE)
        except (OSError, ValueError) as exc:
            raise ModelError(f"vLLM cannot load the model at {path}: "
                             f"{str(exc).splitlines()[0]}. [generation] backend = \"hf\" "
                             "uses transformers instead.") from None
    return _ENGINES[key]


def _eos_ids(tokenizer, path: str) -> list[int]:
    """The tokenizer's EOS and the generation config's, as decode.py stops on."""
    ids = {tokenizer.eos_token_id}
    try:
        from transformers import GenerationConfig

        gen_eos = GenerationConfig.from_pretrained(path).eos_token_id
        ids.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    except OSError:  # no generation_config.json: the tokenizer's EOS alone
        pass
    return sorted(i for i in ids if i is not None)
