"""Generation backends: which one runs (auto/hf/vllm), the clear error without CUDA or vllm, the
vLLM output post-processing (pure, on fake vLLM outputs), the generation hash per backend, and the
evaluation stage's wiring. A real vLLM-vs-HF comparison runs only where CUDA and vllm are."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

import pytest
from conftest import DEMO_TASK, classification_records, write_task

from loop.core.errors import ConfigError, ModelError
from loop.core.records import content_hash
from loop.models import backends
from loop.models.decode import GenOutput
from loop.models.vllm_backend import finish_outputs, in_request_order, lora_rank

GPU_INSTALL = "pip install 'evalloop[gpu]'"


# ---------------------------------------------------------------------------- which backend

@pytest.mark.parametrize("setting, cuda, vllm, expected", [
    ("auto", True, True, "vllm"),
    ("auto", True, False, "hf"),
    ("auto", False, True, "hf"),
    ("auto", False, False, "hf"),
    ("hf", True, True, "hf"),
    ("hf", False, False, "hf"),
    ("vllm", True, True, "vllm"),
    ("vllm", True, False, "the vllm package"),
    ("vllm", False, True, "CUDA"),
    ("vllm", False, False, "CUDA (no GPU is visible to torch) and the vllm package"),
])
def test_resolve_backend_truth_table(monkeypatch, setting, cuda, vllm, expected):
    monkeypatch.setattr(backends, "cuda_available", lambda: cuda)
    monkeypatch.setattr(backends, "vllm_installed", lambda: vllm)
    if expected in ("hf", "vllm"):
        assert backends.resolve_backend(setting) == expected
        return
    with pytest.raises(ConfigError) as err:
        backends.resolve_backend(setting)
    assert expected in str(err.value) and GPU_INSTALL in str(err.value)
    assert ("no GPU is visible" in str(err.value)) == (not cuda)
    assert ("vllm package (not installed)" in str(err.value)) == (not vllm)


def test_unknown_backend_is_a_config_error():
    with pytest.raises(ConfigError, match="known: auto, hf, vllm"):
        backends.resolve_backend("tensorrt")


@pytest.mark.skipif(backends.vllm_missing() is None, reason="vLLM can run here")
@pytest.mark.parametrize("how", ["flag", "toml"])
def test_eval_with_vllm_here_is_a_clear_error_before_the_store(tmp_path, how):
    extra = '[generation]\nbackend = "vllm"\n' if how == "toml" else ""
    toml = write_task(tmp_path, {"test": classification_records(3)}, extra_toml=extra)
    flag = ["--backend", "vllm"] if how == "flag" else []
    proc = subprocess.run([sys.executable, "-m", "loop.cli", "eval", "--task", str(toml),
                           "--model", "tiny-random", "--workspace", str(tmp_path / "ws"), *flag],
                          check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    message = proc.stderr.strip()
    assert message.startswith("evalloop: error: The vllm generation backend needs")
    assert "\n" not in message and GPU_INSTALL in message
    assert not (tmp_path / "ws").exists()


@pytest.mark.skipif(backends.vllm_missing() is None, reason="vLLM can run here")
def test_vllm_benchmark_backend_here_is_a_clear_error(tmp_path):
    from loop.evaluation.benchmarks import run_benchmarks
    from loop.store.db import Store

    with Store(tmp_path / "ws") as store, pytest.raises(ConfigError) as err:
        run_benchmarks(store, "tiny-random", ["arc_easy"], limit=2, backend="vllm")
    assert "The vllm benchmark backend needs" in str(err.value)
    assert GPU_INSTALL in str(err.value)


# ---------------------------------------------------------------------------- post-processing

class CharTokenizer:
    """Token id = a character's code point; 0 is EOS (a special token, dropped when decoding)."""

    eos_token_id = 0

    def decode(self, ids, skip_special_tokens=True):
        return "".join(chr(i) for i in ids if not (skip_special_tokens and i == 0))


@dataclass
class FakeCompletion:
    token_ids: list[int]
    text: str = ""  # vLLM's own text is not used: the ids are cut as on the HF path


@dataclass
class FakeRequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[FakeCompletion]


def fake(request_id: int, text: str, n_prompt: int = 5, eos: bool = False) -> FakeRequestOutput:
    ids = [ord(c) for c in text] + ([0] if eos else [])
    return FakeRequestOutput(str(request_id), list(range(1, n_prompt + 1)), [FakeCompletion(ids)])


def test_outputs_come_back_in_input_order_with_eos_and_stop_strings_cut():
    outs = [fake(12, "second### more", n_prompt=7), fake(11, " first ", eos=True),
            fake(13, "third")]
    results = finish_outputs(outs, CharTokenizer(), [0], ["###"], stop_at_json=False,
                             elapsed_s=3.0)
    assert [r.text for r in results] == ["first", "second", "third"]
    assert [r.prompt_tokens for r in results] == [5, 7, 5]
    # EOS counts as an output token (as on the HF path); a stop string does not shorten the count
    assert [r.output_tokens for r in results] == [8, 14, 5]
    assert all(r.latency_s == pytest.approx(1.0) for r in results)
    assert all(isinstance(r, GenOutput) for r in results)


def test_json_stop_cuts_text_and_token_count_at_the_first_complete_value():
    outs = [fake(0, 'Answer: {"a": "}"} {"b": 2}'), fake(1, "[1, [2]] tail")]
    json_cut = finish_outputs(outs, CharTokenizer(), [0], [], stop_at_json=True, elapsed_s=1.0)
    assert [r.text for r in json_cut] == ['Answer: {"a": "}"}', "[1, [2]]"]
    assert [r.output_tokens for r in json_cut] == [18, 8]  # up to the closing bracket
    plain = finish_outputs(outs, CharTokenizer(), [0], [], stop_at_json=False, elapsed_s=1.0)
    assert [r.text for r in plain] == ['Answer: {"a": "}"} {"b": 2}', "[1, [2]] tail"]


def test_request_ids_that_are_not_numbers_keep_their_order():
    outs = [fake(0, "x"), fake(0, "y")]
    outs[0].request_id, outs[1].request_id = "b-1", "a-2"
    assert [o.outputs[0].token_ids for o in in_request_order(outs)] == [[ord("x")], [ord("y")]]


def test_post_processing_matches_hf_finish_on_the_real_tokenizer():
    from loop.models.decode import finish
    from loop.models.loading import load_tokenizer, parse_model_name

    tok = load_tokenizer(parse_model_name("tiny-random"))
    ids = tok('{"city": "Paris"} and then more text', add_special_tokens=False)["input_ids"]
    out = FakeRequestOutput("1", [1, 2, 3], [FakeCompletion(ids + [tok.eos_token_id])])
    [result] = finish_outputs([out], tok, [tok.eos_token_id], [], stop_at_json=True,
                              elapsed_s=0.5)
    assert result.text == '{"city": "Paris"}'
    assert (result.text, result.output_tokens) == finish(tok, ids, [tok.eos_token_id], [], True)
    assert result.output_tokens < len(ids)


@pytest.mark.parametrize("config, rank", [({"r": 4}, 16), ({"r": 16}, 16), ({"r": 48}, 64),
                                          ({"r": 8, "rank_pattern": {"q_proj": 100}}, 128),
                                          ({}, 16)])
def test_lora_rank_rounds_up_to_a_rank_vllm_accepts(config, rank):
    assert lora_rank(config) == rank


def test_lora_rank_above_vllms_largest_is_a_model_error():
    with pytest.raises(ModelError, match="backend = \"hf\""):
        lora_rank({"r": 1024})


# ---------------------------------------------------------------------------- the eval stage

def test_generation_hash_differs_between_backends_and_hf_keeps_the_old_hash():
    from loop.evaluation.evaluate import GEN_VERSION, generation_hash

    assert generation_hash(64, False, "hf") == content_hash(GEN_VERSION, 64)  # stored runs reused
    assert generation_hash(64, True, "hf") == content_hash(GEN_VERSION, 64, "stop-at-json")
    assert generation_hash(64, False, "vllm") != generation_hash(64, False, "hf")
    assert generation_hash(64, True, "vllm") != generation_hash(64, True, "hf")
    assert generation_hash(64, True, "vllm") != generation_hash(64, False, "vllm")


@dataclass(frozen=True)
class EchoGenerator:
    """Stands in for the vLLM engine (no GPU here): answers 'red' to every prompt."""

    calls: list

    def generate(self, prompts, max_new_tokens, batch_size, progress=True, desc="",
                 stop_at_json=False, on_batch=None):
        self.calls.append(len(prompts))
        outputs = [GenOutput("red", 0.01, 10, 1) for _ in prompts]
        if on_batch is not None:
            on_batch(list(enumerate(outputs)))
        return outputs


def test_eval_with_vllm_uses_its_generator_never_loads_hf_and_stores_apart(tiny_task, workspace,
                                                                         monkeypatch):
    from loop.data.tasks import load_task
    from loop.evaluation.evaluate import evaluate
    from loop.models import loading, vllm_backend
    from loop.store.db import Store

    calls: list[int] = []
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    monkeypatch.setattr(backends, "vllm_installed", lambda: True)
    monkeypatch.setattr(vllm_backend.VllmGenerator, "load",
                        classmethod(lambda cls, name: EchoGenerator(calls)))

    def no_hf(*args, **kwargs):
        raise AssertionError("the HF model was loaded on the vLLM path")

    monkeypatch.setattr(loading, "load_model", no_hf)
    task = load_task(tiny_task)
    with Store(workspace) as store:
        summary = evaluate(store, task, "tiny-random", split="test", progress=False)
        assert calls == [8] and summary.generated == 8
        assert summary.per_category["colour_red"]["pass_rate"] == 1.0
        run = store.query("SELECT params FROM runs WHERE run_id = ?", [summary.run_id])[0]
        assert json.loads(run["params"])["backend"] == "vllm"
        # "auto" resolves to vLLM too: the same predictions are reused, nothing generated
        again = evaluate(store, task, "tiny-random", split="test", progress=False,
                         backend="auto")
        assert again.generated == 0 and again.run_id == summary.run_id
        # the HF backend never reuses vLLM predictions: its run and hash are its own
        monkeypatch.undo()
        hf = evaluate(store, task, "tiny-random", split="test", progress=False, backend="hf")
        assert hf.generated == 8 and hf.run_id != summary.run_id
        hashes = store.query("SELECT DISTINCT gen_hash FROM predictions")
        assert len(hashes) == 2


# ---------------------------------------------------------------------------- a real GPU

def _random_adapter_on(model_name: str, directory):
    """A small random LoRA on a real base (outputs move, but stay those of a working model)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from loop.models.loading import load_model

    model = get_peft_model(load_model(model_name, device="cpu").model,
                           LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    torch.manual_seed(2)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    model.save_pretrained(directory)
    return directory


@pytest.mark.gpu
@pytest.mark.skipif(backends.vllm_missing() is not None,
                    reason=f"needs CUDA and vllm: {backends.vllm_missing()}")
@pytest.mark.parametrize("with_adapter", [False, True])
def test_vllm_and_hf_greedy_outputs_agree(tmp_path, with_adapter):
    # The embedded model, not tiny-random: random weights give near-uniform logits whose argmax
    # flips under bf16 kernels, which would measure rounding rather than the backend.
    from loop.core.prompts import build_prompt
    from loop.data.tasks import load_task
    from loop.models.decode import generate
    from loop.models.loading import DEFAULT_MODEL, load_model
    from loop.models.vllm_backend import VllmGenerator

    name = DEFAULT_MODEL
    if with_adapter:
        name += "+" + str(_random_adapter_on(DEFAULT_MODEL, tmp_path / "adapter"))
    task = load_task(DEMO_TASK)
    lm = load_model(name)
    prompts = [build_prompt(lm.tokenizer, e, task.settings.system_prompt)
               for e in task.split("dev")[:32]]
    hf = generate(lm, prompts, 32, 16, progress=False)
    del lm
    vllm_out = VllmGenerator.load(name).generate(prompts, 32, progress=False)
    assert [o.prompt_tokens for o in vllm_out] == [o.prompt_tokens for o in hf]
    same = sum(a.text == b.text for a, b in zip(vllm_out, hf))
    assert same >= 0.9 * len(prompts), [(a.text, b.text) for a, b in zip(vllm_out, hf)]
