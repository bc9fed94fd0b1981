"""LoRA training on the tiny random model: config validation, packing correctness, learning,
plain-peft loading, SIGKILL + resume, export, lineage. The real-model acceptance run is `slow`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from loop.core.errors import ConfigError
from loop.core.records import Example
from loop.core.settings_load import load_settings
from loop.train.lora import last_checkpoint
from loop.train.sft import TrainingError, export_merged, record_training, train_adapter
from loop.train.config import TrainConfig, use_bf16

ROOT = Path(__file__).resolve().parents[1]
COLORS = ["blue", "green", "red"]
# Small steps on a 2-core machine shared with other jobs: one thread avoids OpenMP stalls.
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "TOKENIZERS_PARALLELISM": "false"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def examples(n: int, split: str = "train") -> list[Example]:
    """A mapping a tiny model can learn in a few steps: the answer is the item's colour word."""
    out = []
    for i in range(n):
        color = COLORS[i % 3]
        instruction = f"Item {i} of batch {i // 7}: name its colour ({'x' * (i % 5)})."
        out.append(Example(Example.make_id(instruction, "", color), instruction, color,
                           category=color, split=split))
    return out


def write_task(root: Path, n_train: int = 48, training: str = "") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", 6)):
        rows = [{"id": e.id, "instruction": e.instruction, "output": e.output,
                 "category": e.category} for e in examples(n, split)]
        (root / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "task.toml").write_text('name = "colors"\ntrain = "train.jsonl"\ntest = "test.jsonl"\n'
                                    + (f"[training]\n{training}\n" if training else ""))
    return root / "task.toml"


FAST = TrainConfig(max_steps=24, epochs=None, batch_size=8, learning_rate=1e-2, save_steps=12,
                   log_steps=2, bf16=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("adapter")
    result = train_adapter("tiny-random", examples(48), out, FAST, dev_examples=examples(9, "dev"),
                           progress=False)
    return result


# ---------------------------------------------------------------------------- config

def test_defaults_and_valid_section():
    assert TrainConfig.model_validate({}) == TrainConfig()
    assert (TrainConfig().learning_rate, TrainConfig().epochs) == (1e-3, 2.0)  # measured
    cfg = TrainConfig.model_validate({"rank": 8, "max_steps": 100, "target_modules": ["q_proj"],
                                      "bf16": False, "dropout": 0})
    assert (cfg.rank, cfg.alpha, cfg.max_steps, cfg.epochs) == (8, 16.0, 100, None)
    assert cfg.target_modules == ("q_proj",) and cfg.bf16 is False and cfg.dropout == 0.0
    assert TrainConfig.model_validate({"rank": 8, "alpha": 8}).alpha == 8.0
    assert TrainConfig.from_dict(cfg.as_dict()) == cfg
    assert cfg.as_dict()["target_modules"] == ["q_proj"]  # what runs store and hash


def test_every_config_problem_reported_at_once(tmp_path):
    (tmp_path / "test.jsonl").write_text('{"instruction": "i", "output": "o"}\n')
    toml = tmp_path / "task.toml"
    toml.write_text('test = "test.jsonl"\n[training]\nrank = 0\nlearning_rate = "fast"\n'
                    'bf16 = "maybe"\nepochs = 2\nmax_steps = 5\nlerning_rate = 1e-3\n'
                    'qlora = 1\ndropout = 1.5\ntarget_modules = []\n')
    with pytest.raises(ConfigError) as err:
        load_settings(toml)
    msg = str(err.value)
    assert msg.startswith("8 problem(s)")
    for needle in ("rank: must be >= 1", "learning_rate: must be a number", "bf16: must be",
                   "max_steps: give epochs or max_steps, not both",
                   "lerning_rate: unknown key (did you mean 'learning_rate'?)",
                   "qlora: must be true or false", "dropout: must be < 1",
                   "target_modules: must be"):
        assert f"{toml}: [training] {needle}" in msg


def test_bf16_auto_is_measured_once_per_model_and_cached(tmp_path, monkeypatch):
    import torch

    from loop.models import precision

    monkeypatch.setenv("EVALLOOP_HOME", str(tmp_path))
    timed = []
    real = precision.time_forward
    monkeypatch.setattr(precision, "time_forward",
                        lambda model: timed.append(model.dtype) or real(model))
    cpu = torch.device("cpu")
    first = use_bf16("auto", cpu, "tiny-random")
    (entry,) = json.loads((tmp_path / "bf16.json").read_text()).values()  # cached on disk
    assert timed == [torch.float32, torch.bfloat16]  # the model itself, in both dtypes
    assert entry["fp32_s"] > 0 and entry["bf16_s"] > 0 and entry["bf16"] is first
    assert first == (entry["fp32_s"] / entry["bf16_s"] >= precision.BF16_MIN_SPEEDUP)
    assert use_bf16("auto", cpu, "tiny-random") is first and len(timed) == 2  # not measured again
    assert use_bf16(False, cpu, "tiny-random") is False
    assert use_bf16(True, cpu, "tiny-random") is True


# ---------------------------------------------------------------------------- packing

def test_packed_batch_equals_separate_sequences_and_never_mixes_them():
    import torch
    from transformers import AutoModelForCausalLM

    from loop.models.loading import tiny_random_checkpoint
    from loop.train.packing import Collator, register_varlen_attention

    path = tiny_random_checkpoint()
    packed_model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation=register_varlen_attention()).eval()
    plain = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                 attn_implementation="sdpa").eval()
    seqs = [[5, 17, 300, 42, 7], [9, 8, 7], [1000, 2000, 3000, 4000]]
    feats = [{"input_ids": s, "labels": s} for s in seqs]

    def inputs(features, **kw):
        batch = Collator(pad_token_id=0, **kw)(features)
        return {k: v for k, v in batch.items() if k not in ("labels", "real_tokens")}

    batch = Collator(pad_token_id=0, multiple=8)(feats)
    assert batch["real_tokens"] == 12 and batch["input_ids"].shape == (1, 16)
    assert batch["cu_seq_lens_q"].tolist() == [0, 5, 8, 12, 16]  # the top-up is its own segment
    assert batch["labels"][0].tolist() == [-100, 17, 300, 42, 7, -100, 8, 7, -100, 2000, 3000,
                                           4000, -100, -100, -100, -100]
    with torch.no_grad():
        logits = packed_model(**inputs(feats)).logits[0]
    start = 0
    for s in seqs:
        with torch.no_grad():
            alone = plain(torch.tensor([s])).logits[0]
        torch.testing.assert_close(logits[start:start + len(s)], alone, atol=1e-4, rtol=1e-4)
        start += len(s)
    # changing the first sequence leaves the others untouched (no cross-example attention)
    with torch.no_grad():
        changed = packed_model(**inputs([{"input_ids": [6] * 5, "labels": [6] * 5}, *feats[1:]]))
    torch.testing.assert_close(changed.logits[0, 5:12], logits[5:12], atol=1e-5, rtol=1e-5)
    # bf16 weights under autocast (the CPU training setup; attention upcast to fp32) stay close
    bf16_model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.bfloat16, attn_implementation=register_varlen_attention()).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = bf16_model(**inputs(feats)).logits[0].float()
    assert float((low[:12] - logits[:12]).abs().max()) < 0.02  # logits span about +-1 here
    # the padded fallback gives the same logits at real positions
    with torch.no_grad():
        rows = plain(**inputs(feats, padding_free=False)).logits
    torch.testing.assert_close(rows[1, :3], logits[5:8], atol=1e-4, rtol=1e-4)


def test_token_budget_cuts_a_batch_into_chunks_of_whole_examples():
    from loop.train.packing import Collator, budget_groups

    assert budget_groups([5, 3, 4, 9, 1], None) == [[0, 1, 2, 3, 4]]
    assert budget_groups([5, 3, 4, 9, 1], 8) == [[0, 1], [2], [3], [4]]  # 9 > 8 goes alone
    feats = [{"input_ids": s, "labels": s} for s in ([5, 17, 300, 42, 7], [9, 8, 7], [1, 2])]
    whole = Collator(pad_token_id=0, multiple=4)(feats)
    cut = Collator(pad_token_id=0, multiple=4, token_budget=8)(feats)
    assert [c["cu_seq_lens_q"].tolist() for c in cut["chunks"]] == [[0, 5, 8], [0, 2, 4]]
    assert sum(c["real_tokens"] for c in cut["chunks"]) == whole["real_tokens"] == 10
    # the top-level labels hold every target once, so the trainer counts the whole batch
    assert int((cut["labels"] != -100).sum()) == int((whole["labels"] != -100).sum()) == 7
    assert Collator(pad_token_id=0, token_budget=64)(feats).keys() == whole.keys()


def test_chunked_micro_batches_train_like_one_packed_batch(tmp_path):
    """Forward + backward per chunk, normalised by the whole batch: the same gradients, hence the
    same losses and adapter, as one packed row (fp32; up to summation order, which Adam
    amplifies on near-zero gradients)."""
    from safetensors.torch import load_file

    from loop.models.loading import load_tokenizer, parse_model_name
    from loop.core.prompts import tokenize_examples
    from loop.train.packing import Collator

    rows, _ = tokenize_examples(load_tokenizer(parse_model_name("tiny-random")), examples(8), None,
                                1024)
    assert len(Collator(0, token_budget=64)(rows)["chunks"]) >= 4  # a batch really is cut
    cfg = FAST.model_copy(update=dict(max_steps=3, save_steps=3, log_steps=1))
    one = train_adapter("tiny-random", examples(24), tmp_path / "one",
                        cfg.model_copy(update=dict(micro_batch_tokens=10**6)), progress=False)
    cut = train_adapter("tiny-random", examples(24), tmp_path / "cut",
                        cfg.model_copy(update=dict(micro_batch_tokens=64)), progress=False)
    assert one.tokens == cut.tokens
    for a, b in zip(one.logs, cut.logs):
        if a.loss is not None:
            assert b.loss == pytest.approx(a.loss, rel=1e-4)
    wa = load_file(str(tmp_path / "one" / "adapter_model.safetensors"))
    wb = load_file(str(tmp_path / "cut" / "adapter_model.safetensors"))
    import torch

    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], atol=1e-4, rtol=1e-3)


LONG = ("Read the customer's message and answer with exactly one colour word taken from the "
        "message's item, nothing else: no punctuation, no explanation, no quotes. {}")
OTHER = ("You label catalogue items. Reply with the colour of the item in lower case, a single "
         "word, and never add any other text. {}")


def prefixed_examples(n: int, templates=(LONG,)) -> list[Example]:
    """`examples(n)` whose instructions start with a long fixed text (one per template, in turn),
    as on real tasks."""
    out = []
    for i, e in enumerate(examples(n)):
        instruction = templates[i % len(templates)].format(e.instruction)
        out.append(replace(e, id=Example.make_id(instruction, "", e.output),
                           instruction=instruction))
    return out


def test_prefix_groups_share_only_what_every_row_of_a_chunk_has():
    from loop.train.packing import prefix_groups

    a, b = list(range(100, 140)), list(range(200, 240))  # two 40-token instructions
    rows = [a + [1, 9], b + [2, 9], a + [3, 9], b + [4, 9], a + [1, 9]]
    prompts = [41] * 5  # each row's answer is its last token
    # sorted, grouped per instruction; the duplicate keeps one token of its own before its answer
    assert prefix_groups(rows, prompts, None) == [([0, 4, 2], 40), ([1, 3], 40)]
    # a budget counts forward tokens: prefix once + rests
    assert prefix_groups(rows, prompts, 44) == [([0, 4], 40), ([2], 0), ([1, 3], 40)]
    # under 32 common tokens nothing is shared (and no row is ever left out)
    short = [r[30:] for r in rows]
    groups = prefix_groups(short, [11] * 5, None)
    assert all(p == 0 for _, p in groups) and sorted(i for g, _ in groups for i in g) == [*range(5)]


def test_shared_prefix_packing_gives_each_row_its_own_logits():
    """[prefix once][rest 1][rest 2]...: every position's logits equal the row's alone, for rows
    of two instructions in one batch (one chunk per instruction) and for a duplicated row."""
    import torch
    from transformers import AutoModelForCausalLM

    from loop.models.loading import tiny_random_checkpoint
    from loop.train.packing import Collator, prefix_groups, register_varlen_attention

    path = tiny_random_checkpoint()
    packed_model = AutoModelForCausalLM.from_pretrained(
        path, dtype=torch.float32, attn_implementation=register_varlen_attention()).eval()
    plain = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                 attn_implementation="sdpa").eval()
    a, b = list(range(100, 140)), list(range(3000, 3045))
    seqs = [a + [5, 17, 300, 42, 7], b + [9, 8, 7], a + [1000, 2000, 3000, 4000], b + [9, 8, 7],
            a + [5, 6]]
    prompts = [42, 46, 41, 46, 41]
    feats = [{"input_ids": s, "labels": [-100] * p + s[p:]} for s, p in zip(seqs, prompts)]
    batch = Collator(pad_token_id=0, multiple=8, share_prefix=True)(feats)
    groups = prefix_groups(seqs, prompts, None)
    assert [p for _, p in groups] == [40, 45]  # the duplicate row caps b's prefix at 46 - 1
    assert sum(c["real_tokens"] for c in batch["chunks"]) == sum(map(len, seqs))
    assert [c["forward_tokens"] for c in batch["chunks"]] == [40 + 5 + 4 + 2, 45 + 3 + 3]
    # the top-level labels hold every target once, exactly as without sharing
    unshared = Collator(pad_token_id=0, multiple=8)(feats)
    assert int((batch["labels"] != -100).sum()) == int((unshared["labels"] != -100).sum()) == 11
    for chunk, (rows, prefix) in zip(batch["chunks"], groups):
        assert chunk["shared_prefix_len"] == prefix
        lengths = [len(seqs[i]) - prefix for i in rows]
        assert chunk["position_ids"][0, :prefix + sum(lengths)].tolist() == list(range(prefix)) \
            + [prefix + j for n in lengths for j in range(n)]
        inputs = {k: v for k, v in chunk.items()
                  if k not in ("labels", "real_tokens", "forward_tokens")}
        with torch.no_grad():
            logits = packed_model(**inputs).logits[0]
        start = prefix
        for i, n in zip(rows, lengths):
            with torch.no_grad():
                alone = plain(torch.tensor([seqs[i]])).logits[0]
            torch.testing.assert_close(logits[:prefix], alone[:prefix], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(logits[start:start + n], alone[prefix:], atol=1e-4,
                                       rtol=1e-4)
            start += n


def test_shared_prefix_trains_exactly_like_unshared_rows(tmp_path):
    """Sharing on vs off, rows of two long instructions: the same losses and the same adapter
    (fp32; up to summation order), with far fewer forward tokens."""
    import torch
    from safetensors.torch import load_file

    from loop.models.loading import load_tokenizer, parse_model_name
    from loop.core.prompts import tokenize_examples
    from loop.train.packing import Collator

    data = prefixed_examples(24, (LONG, OTHER))
    rows, _ = tokenize_examples(load_tokenizer(parse_model_name("tiny-random")), data[:8], None,
                                1024)
    shared = Collator(0, token_budget=1024, share_prefix=True)(rows)
    assert [c.get("shared_prefix_len", 0) >= 32 for c in shared["chunks"]] == [True, True]
    forward = sum(c["forward_tokens"] for c in shared["chunks"])
    assert forward < 0.6 * sum(len(r["input_ids"]) for r in rows)
    cfg = FAST.model_copy(update=dict(max_steps=3, save_steps=3, log_steps=1))
    off = train_adapter("tiny-random", data, tmp_path / "off",
                        cfg.model_copy(update=dict(share_prefix=False)), progress=False)
    on = train_adapter("tiny-random", data, tmp_path / "on", cfg, progress=False)
    assert on.tokens == off.tokens  # tokens/s counts each row's own tokens either way
    losses = [(a.loss, b.loss) for a, b in zip(off.logs, on.logs) if a.loss is not None]
    assert len(losses) == 3
    for a, b in losses:
        assert b == pytest.approx(a, rel=1e-4)
    wa = load_file(str(tmp_path / "off" / "adapter_model.safetensors"))
    wb = load_file(str(tmp_path / "on" / "adapter_model.safetensors"))
    for key in wa:
        torch.testing.assert_close(wb[key], wa[key], atol=1e-4, rtol=1e-3)


# ---------------------------------------------------------------------------- training

def test_loss_goes_down_and_lora_weights_change(trained):
    from safetensors.torch import load_file

    losses = [r.loss for r in trained.logs if r.loss is not None]
    assert trained.steps_done == trained.total_steps == 24
    # a random 2-layer model's final norm caps its logits, so the drop is small but real
    assert losses[-1] < losses[0] - 0.2 and max(losses[-3:]) < min(losses[:2]), losses
    evals = [r.eval_loss for r in trained.logs if r.eval_loss is not None]
    assert len(evals) == 2 and trained.best_eval_loss == min(evals)
    weights = load_file(str(Path(trained.adapter_dir) / "adapter_model.safetensors"))
    lora_b = [w for k, w in weights.items() if "lora_B" in k]
    assert lora_b and all(float(w.abs().max()) > 0 for w in lora_b)  # B starts at zero
    assert all(r.tokens_per_s and r.peak_mem_mb for r in trained.logs if r.loss is not None)
    assert trained.padding_free and trained.tokens > 0


def test_rerun_returns_finished_run_without_training(trained):
    start = time.perf_counter()
    again = train_adapter("tiny-random", examples(48), trained.adapter_dir, FAST,
                          dev_examples=examples(9, "dev"), progress=False)
    assert again == trained and time.perf_counter() - start < 10


def test_adapter_loads_with_plain_peft_and_greedy_outputs_match(trained):
    from loop.models.decode import generate
    from loop.models.loading import load_model
    from loop.core.prompts import build_prompt

    lm = load_model(f"tiny-random+{trained.adapter_dir}")
    prompts = [build_prompt(lm.tokenizer, e) for e in examples(4, "test")]
    ours = [o.text for o in generate(lm, prompts, max_new_tokens=8, progress=False)]
    base = [o.text for o in generate(load_model("tiny-random"), prompts, max_new_tokens=8,
                                     progress=False)]
    script = (
        "import json, sys, torch\n"
        "from transformers import AutoModelForCausalLM, AutoTokenizer\n"
        "from peft import PeftModel\n"
        "base, adapter, prompts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])\n"
        "tok = AutoTokenizer.from_pretrained(base)\n"
        "model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter)\n"
        "out = []\n"
        "for p in prompts:\n"
        "    ids = tok(p, add_special_tokens=False, return_tensors='pt')\n"
        "    gen = model.generate(**ids, max_new_tokens=8, do_sample=False,\n"
        "                         pad_token_id=tok.eos_token_id)\n"
        "    out.append(tok.decode(gen[0, ids['input_ids'].shape[1]:],\n"
        "                          skip_special_tokens=True).strip())\n"
        "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-c", script, lm.base_path, trained.adapter_dir,
                           json.dumps(prompts)], capture_output=True, text=True, env=ENV,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == ours
    assert ours != base  # the adapter really changes the model


def test_export_merged_matches_adapter(trained, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from loop.models.loading import load_model

    out = export_merged(trained.adapter_dir, tmp_path / "merged")
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    lm = load_model(f"tiny-random+{trained.adapter_dir}")
    ids = torch.tensor([[1, 2, 3, 400, 500]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, lm.model(ids).logits, atol=1e-4, rtol=1e-4)
    with pytest.raises(TrainingError, match="not empty"):
        export_merged(trained.adapter_dir, out)


def test_lineage_rows(trained, tmp_path):
    from loop.store.db import Store

    with Store(tmp_path / "ws") as store:
        model_id = record_training(store, trained, "colors", "manifest-abc")
        run = store.query("SELECT * FROM training_runs")[0]
        assert (run["train_id"], run["model_id"], run["dataset_hash"], run["total_steps"]) == \
            (trained.train_id, model_id, "manifest-abc", 24)
        assert json.loads(run["config"])["rank"] == FAST.rank and run["seed"] == FAST.seed
        logs = store.query("SELECT * FROM train_logs ORDER BY step")
        assert [r["step"] for r in logs] == [r.step for r in trained.logs]
        model = store.query("SELECT * FROM models WHERE model_id = ?", [model_id])[0]
        assert model["parent_id"] == trained.base_model_id


def test_parent_adapter_continues_training(trained, tmp_path):
    from safetensors.torch import load_file

    cfg = FAST.model_copy(update=dict(max_steps=4, save_steps=4))
    child = train_adapter(f"tiny-random+{trained.adapter_dir}", examples(12), tmp_path / "child",
                          cfg, progress=False)
    assert child.parent_adapter == trained.adapter_dir
    parent_w = load_file(str(Path(trained.adapter_dir) / "adapter_model.safetensors"))
    child_w = load_file(str(tmp_path / "child" / "adapter_model.safetensors"))
    assert parent_w.keys() == child_w.keys()
    key = next(k for k in parent_w if "lora_B" in k)
    # started from the parent (not from zero) and moved on from it
    assert not bool((child_w[key] == 0).all()) and not bool((child_w[key] == parent_w[key]).all())
    first_loss = next(r.loss for r in child.logs if r.loss is not None)
    assert first_loss < trained.logs[0].loss


def test_early_stopping_on_dev_loss_keeps_the_best_adapter(tmp_path):
    # dev answers the training never shows: dev loss rises as training sharpens on train answers
    dev = [replace(e, output="purple", id=f"dev{i}") for i, e in enumerate(examples(6, "dev"))]
    cfg = FAST.model_copy(update=dict(max_steps=60, save_steps=4, patience=2))
    result = train_adapter("tiny-random", examples(24), tmp_path / "es", cfg, dev_examples=dev,
                           progress=False)
    evals = [(r.step, r.eval_loss) for r in result.logs if r.eval_loss is not None]
    assert result.stopped_early and result.steps_done < result.total_steps == 60
    assert len(evals) == result.steps_done // 4
    assert result.best_eval_loss == min(e for _, e in evals)
    best_step = min(evals, key=lambda se: se[1])[0]
    assert result.steps_done == best_step + 2 * 4  # patience: two evaluations without improvement
    from safetensors.torch import load_file

    final = load_file(str(tmp_path / "es" / "adapter_model.safetensors"))
    best = load_file(str(tmp_path / "es" / "checkpoints" / f"checkpoint-{best_step}"
                         / "adapter_model.safetensors"))
    assert all(bool((final[k] == best[k]).all()) for k in final)  # the best weights were kept


def test_refuses_foreign_dir_and_qlora_on_cpu(tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(TrainingError, match="not an evalloop training directory"):
        train_adapter("tiny-random", examples(8), tmp_path / "other", FAST, progress=False)
    with pytest.raises(TrainingError, match="CUDA"):
        train_adapter("tiny-random", examples(8), tmp_path / "q",
                      FAST.model_copy(update=dict(qlora=True)), progress=False)


class FakeTrainer:
    """What run_trainer reads of a trl trainer: train(), state, rank 0, the saved adapter."""

    def __init__(self, out: Path, fail: BaseException | None = None):
        from types import SimpleNamespace

        self.out, self.fail, self.resumed_from, self.saved = out, fail, "unset", []
        self.state = SimpleNamespace(max_steps=4, global_step=3)
        self.is_fsdp_enabled, self.model = False, self
        self.accelerator = SimpleNamespace(unwrap_model=lambda model: model)

    def train(self, resume_from_checkpoint=None):
        self.resumed_from = resume_from_checkpoint
        if self.fail is not None:
            raise self.fail
        (self.out / "train_log.jsonl").write_text(json.dumps({"step": 2, "loss": 1.5}) + "\n")

    def is_world_process_zero(self) -> bool:
        return True

    def save_pretrained(self, path, state_dict=None, selected_adapters=None):
        self.saved.append((path, selected_adapters))
        (Path(path) / "adapter_config.json").write_text('{"target_modules": ["v", "q"]}')


def test_one_runner_trains_resumes_reports_and_saves_every_method(tmp_path):
    import torch

    from loop.train.lora import LoraRun, run_trainer

    checkpoint = tmp_path / "checkpoints" / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text('{"global_step": 2}')
    (checkpoint / "adapter_model.safetensors").write_bytes(b"")
    run = LoraRun("t1", tmp_path, "tiny-random", "base-id", None, FAST, n_train=5, n_dev=1,
                  skipped=("x",), device=torch.device("cpu"), bf16=False, padding_free=True)
    trainer = FakeTrainer(tmp_path)
    result = run_trainer(trainer, run, "no memory", throughput=lambda state: (100, 50.0))
    assert trainer.resumed_from == str(checkpoint) and result.resumed_from_step == 2
    assert (result.train_id, result.steps_done, result.total_steps, result.stopped_early) == (
        "t1", 3, 4, True)
    assert (result.tokens, result.tokens_per_s, result.precision, result.train_loss) == (
        100, 50.0, "fp32", 1.5)
    assert trainer.saved == [(str(tmp_path), ["default"])]  # never the frozen "ref" copy
    assert json.loads((tmp_path / "adapter_config.json").read_text())["target_modules"] == [
        "q", "v"]
    assert json.loads((tmp_path / "train_result.json").read_text())["train_id"] == "t1"
    with pytest.raises(TrainingError, match="^no memory$"):
        run_trainer(FakeTrainer(tmp_path, torch.OutOfMemoryError()), run, "no memory")


def test_train_for_task_reads_the_training_section_and_records_lineage(tmp_path):
    from loop.store.db import Store
    from loop.data.tasks import load_task
    from loop.train.sft import train_for_task

    with pytest.raises(ConfigError, match=r"^2 problem.*\[training\] rank: .*\[training\] batch"):
        load_task(write_task(tmp_path / "bad", 12, training="rank = -1\nbatch = 4"))
    with Store(tmp_path / "ws") as store:
        task = load_task(write_task(tmp_path / "ok", 12, training="rank = 4\nmax_steps = 3\n"
                                    "batch_size = 4\nsave_steps = 3\nbf16 = false"))
        result = train_for_task(store, task, tmp_path / "ws", model="tiny-random",
                                dataset_hash="m1", progress=False)
        assert (result.config.rank, result.config.alpha, result.steps_done) == (4, 8.0, 3)
        assert Path(result.adapter_dir) == tmp_path / "ws" / "adapters" / result.train_id
        row = store.query("SELECT task_id, dataset_hash, n_train, n_dev FROM training_runs")[0]
        assert row == {"task_id": "colors", "dataset_hash": "m1", "n_train": result.n_train,
                       "n_dev": result.n_dev} and result.n_dev > 0  # dev split off train


# ---------------------------------------------------------------------------- kill + resume

def test_sigkill_then_rerun_resumes_from_checkpoint(tmp_path):
    task = write_task(tmp_path / "task", n_train=60)
    ws = tmp_path / "ws"
    cmd = [sys.executable, "-m", "loop.train", "--task", str(task), "--workspace", str(ws),
           "--model", "tiny-random", "--max-steps", "150", "--save-steps", "10",
           "--patience", "0", "--json"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.time() + 90
    try:
        while time.time() < deadline and proc.poll() is None:
            found = [last_checkpoint(d / "checkpoints")[1] for d in ws.glob("adapters/*")]
            if any(found):
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    adapter_dir = next(ws.glob("adapters/*"))
    assert not (adapter_dir / "train_result.json").exists()  # it really died mid-run
    checkpoint, step = last_checkpoint(adapter_dir / "checkpoints")
    assert 0 < step < 150
    assert json.loads((checkpoint / "trainer_state.json").read_text())["max_steps"] == 150

    rerun = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=180,
                           check=False)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    result = json.loads(rerun.stdout)
    assert result["resumed_from_step"] == step
    assert result["total_steps"] == result["steps_done"] == 150
    assert result["adapter_dir"] == str(adapter_dir)
    logged = [r["step"] for r in result["logs"]]
    assert logged[0] <= step and logged[-1] == 150  # the killed run's rows were kept


# ---------------------------------------------------------------------------- real model

@pytest.mark.slow
def test_lora_on_embedded_model_raises_dev_exact_match(tmp_path):
    """A small version of the acceptance run: 120 ISO-date pool examples, two epochs, greedy
    exact match on the 50 ISO-date dev items. (The full run, 300 examples of all five skills,
    went from 6.8% to 66.8% dev exact match.)"""
    from loop.models.decode import generate
    from loop.models.loading import load_model
    from loop.core.prompts import build_prompt
    from loop.data.tasks import load_task

    task = load_task(ROOT / "datasets" / "demo" / "task.toml")
    train = [e for e in task.split("train") if e.category == "iso_date"][:120]
    dev = [e for e in task.split("dev") if e.category == "iso_date"]
    result = train_adapter("smollm2-135m-instruct", train, tmp_path / "a",
                           TrainConfig(epochs=2.0, patience=0), progress=False,
                           system_prompt=task.settings.system_prompt)

    def exact_match(name: str) -> float:
        lm = load_model(name)
        prompts = [build_prompt(lm.tokenizer, e, task.settings.system_prompt) for e in dev]
        outs = generate(lm, prompts, max_new_tokens=16, batch_size=25, progress=False)
        return sum(o.text.strip() == e.output for o, e in zip(outs, dev)) / len(dev)

    before = exact_match("smollm2-135m-instruct")
    after = exact_match(f"smollm2-135m-instruct+{result.adapter_dir}")
    assert after >= before + 0.20, (before, after)
