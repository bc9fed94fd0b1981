"""Model-name resolution, the tiny random model, fingerprints and the embedded checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest

from loop.core.errors import ModelError
from loop.models.loading import (DEFAULT_MODEL, fingerprint, load_model, parse_model_name,
                         tiny_random_checkpoint)


def test_unknown_name_lists_known_names_and_other_forms():
    with pytest.raises(ModelError) as err:
        parse_model_name("gpt-17")
    message = str(err.value)
    assert "gpt-17" in message and DEFAULT_MODEL in message and "tiny-random" in message
    assert "hub id" in message and "ADAPTER" in message


def test_names_resolve_to_builtins_dirs_hub_ids_and_adapters(tmp_path):
    assert parse_model_name("").base == DEFAULT_MODEL
    assert parse_model_name("tiny-random").adapter is None
    assert parse_model_name("HuggingFaceTB/SmolLM2-135M-Instruct").base.startswith("Hugging")
    assert parse_model_name(str(tmp_path)).base == str(tmp_path)
    with pytest.raises(ModelError, match="adapter_config.json"):
        parse_model_name(f"tiny-random+{tmp_path}")
    (tmp_path / "adapter_config.json").write_text("{}")
    assert parse_model_name(f"tiny-random+{tmp_path}").adapter == tmp_path.resolve()


def test_with_adapter_swaps_the_adapter_checked_like_a_parsed_name(tmp_path):
    base = parse_model_name("tiny-random")
    with pytest.raises(ModelError, match="adapter_config.json"):
        base.with_adapter(tmp_path)
    (tmp_path / "adapter_config.json").write_text("{}")
    on = base.with_adapter(tmp_path)
    parsed = parse_model_name(f"tiny-random+{tmp_path}")
    assert (on.base, on.adapter) == (parsed.base, parsed.adapter)
    assert on.with_adapter(None) == parse_model_name("tiny-random")


def test_tiny_random_is_seeded_safetensors_and_loads_on_cpu():
    path = tiny_random_checkpoint()
    assert (path / "model.safetensors").is_file() and not list(path.glob("*.bin"))
    lm = load_model("tiny-random")
    assert lm.device.type in ("cpu", "cuda")
    assert lm.model.config.num_hidden_layers == 2
    assert lm.tokenizer.chat_template  # the real SmolLM2 tokenizer
    again = load_model("tiny-random")
    first = next(lm.model.parameters())
    assert first.equal(next(again.model.parameters()))
    assert lm.model_id == again.model_id == fingerprint(parse_model_name("tiny-random"))


def test_adapter_changes_the_fingerprint(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"r": 8}')
    (tmp_path / "adapter_model.safetensors").write_bytes(b"a")
    base = fingerprint(parse_model_name("tiny-random"))
    with_adapter = fingerprint(parse_model_name(f"tiny-random+{tmp_path}"))
    assert with_adapter.startswith(base + "+") and with_adapter != base
    (tmp_path / "adapter_model.safetensors").write_bytes(b"b")
    assert fingerprint(parse_model_name(f"tiny-random+{tmp_path}")) != with_adapter


def test_adapter_without_safetensors_is_refused(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    (tmp_path / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match="safetensors"):
        load_model(f"tiny-random+{tmp_path}")


@pytest.mark.slow
def test_embedded_model_is_converted_once_to_plain_safetensors():
    from loop.models.loading import embedded_checkpoint

    path = embedded_checkpoint()
    assert (path / "model.safetensors").stat().st_size > 100e6
    assert "quantization_config" not in (path / "config.json").read_text()
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    lm = load_model(DEFAULT_MODEL)
    assert not getattr(lm.model, "is_quantized", False)
    assert embedded_checkpoint() == path and (path / "model.safetensors").stat().st_mtime_ns == mtime
    assert Path(lm.base_path) == path


def test_one_bf16_rule_cuda_support_or_a_measured_cpu_speedup(tmp_path, monkeypatch):
    import torch

    from loop.models import precision

    monkeypatch.setenv("EVALLOOP_HOME", str(tmp_path))
    lm = load_model("tiny-random")
    times = {torch.float32: 1.3, torch.bfloat16: 1.0}  # bf16 1.3x faster: above the bar
    monkeypatch.setattr(precision, "time_forward", lambda model: times[model.dtype])
    cpu = torch.device("cpu")
    assert precision.prefer_bf16(cpu, lm.model.config, lambda: lm.model) is True
    assert lm.model.dtype == torch.float32  # probed on a copy
    times[torch.float32] = 1.2  # 1.2x is within the noise: fp32. A new shape, a new measurement
    wider = type(lm.model.config)(**{**lm.model.config.to_dict(), "hidden_size": 128})
    assert precision.prefer_bf16(cpu, wider, lambda: lm.model) is False
    assert precision.prefer_bf16(cpu, lm.model.config, lambda: 1 / 0) is True  # memoised
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert precision.prefer_bf16(torch.device("cuda"), lm.model.config, lambda: 1 / 0) is True
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision.prefer_bf16(torch.device("cuda"), lm.model.config, lambda: 1 / 0) is False
    assert precision.prefer_bf16(torch.device("mps"), lm.model.config, lambda: 1 / 0) is False


def test_tokenizer_is_read_once_per_process_and_each_caller_gets_its_own_copy(monkeypatch):
    """A cycle asked for its base's tokenizer 21 times: it is read once, and a caller that sets
    padding_side (generation does) changes no one else's."""
    import transformers

    from loop.models import loading

    monkeypatch.setattr(loading, "_TOKENIZERS", {})
    reads = []
    real = transformers.AutoTokenizer.from_pretrained

    def counted(*args, **kwargs):
        reads.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", counted)
    spec = loading.parse_model_name("tiny-random")
    first = loading.load_tokenizer(spec)
    first.padding_side = "left" if first.padding_side == "right" else "right"
    second = loading.load_tokenizer(spec)
    assert second.padding_side != first.padding_side and second is not first
    assert second("a colour")["input_ids"] == first("a colour")["input_ids"]
    assert loading.load_model(spec).tokenizer is not second
    assert len(reads) == 1
