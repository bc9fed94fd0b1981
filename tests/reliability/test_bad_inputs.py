"""The bad-input corpus: every malformed input gives a one-paragraph error that names the file,
line or key, a non-zero exit, and leaves the store byte-for-byte unchanged."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import classification_records  # noqa: E402
from loop.cli import main  # noqa: E402
from loop.store.db import DB_NAME, Store  # noqa: E402

GOOD = [json.dumps(r) for r in classification_records(4)]
BASE_TOML = 'name = "bad"\ntest = "test.jsonl"\n'

# (case id, test.jsonl lines or bytes, extra TOML, extra CLI args, command, expected fragment)
CASES = [
    ("truncated_json", GOOD + ['{"instruction": "x", "output": '], "", [], "eval", "test.jsonl:5"),
    ("trailing_garbage", GOOD + ['{"instruction": "x", "output": "y"} extra'], "", [], "eval",
     "not valid JSON"),
    ("array_line", GOOD + ['["instruction", "output"]'], "", [], "eval", "expected a JSON object"),
    ("string_line", GOOD + ['"just text"'], "", [], "eval", "expected a JSON object"),
    ("number_output", GOOD + ['{"instruction": "x", "output": 5}'], "", [], "eval",
     "field 'output' must be a string"),
    ("null_instruction", GOOD + ['{"instruction": null, "output": "y"}'], "", [], "eval",
     "field 'instruction'"),
    ("list_input", GOOD + ['{"instruction": "x", "input": ["a"], "output": "y"}'], "", [], "eval",
     "field 'input' must be a string"),
    ("dict_category", GOOD + ['{"instruction": "x", "output": "y", "category": {}}'], "", [],
     "eval", "field 'category' must be a string"),
    ("int_id", GOOD + ['{"id": 7, "instruction": "x", "output": "y"}'], "", [], "eval",
     "field 'id' must be a string"),
    ("missing_instruction", GOOD + ['{"output": "y"}'], "", [], "eval",
     "missing required field 'instruction'"),
    ("missing_output", GOOD + ['{"instruction": "x"}'], "", [], "eval",
     "missing required field 'output'"),
    ("blank_instruction", GOOD + ['{"instruction": "   ", "output": "y"}'], "", [], "eval",
     "field 'instruction' is empty"),
    ("invalid_utf8", b'{"instruction": "caf\xe9", "output": "y"}\n', "", [], "eval",
     "not valid UTF-8"),
    ("bom_prefixed", ["\ufeff" + GOOD[0]], "", [], "eval", "not valid JSON"),
    ("duplicate_ids", ['{"id": "a", "instruction": "x", "output": "y"}',
                       '{"id": "a", "instruction": "x", "output": "z"}'], "", [], "eval",
     "duplicate id 'a'"),
    ("huge_record", ['{"instruction": "' + "x" * 1_100_000 + '", "output": "y"}'], "", [], "eval",
     "over the"),
    ("empty_file", [], "", [], "eval", "is empty"),
    ("only_blank_lines", ["", "   ", ""], "", [], "eval", "is empty"),
    ("negative_limit", GOOD, "", ["--limit", "-3"], "eval", "--limit"),
    ("zero_limit", GOOD, "", ["--limit", "0"], "eval", "--limit"),
    ("unknown_model", GOOD, "", ["--model", "llama-99b"], "eval", "Unknown model 'llama-99b'"),
    ("adapter_without_config", GOOD, "", ["--model", "tiny-random+/nonexistent/adapter"], "eval",
     "adapter_config.json"),
    ("no_dev_split", GOOD, "", ["--split", "dev"], "eval", "no dev examples"),
    ("prompt_longer_than_context", [json.dumps({"instruction": "Summarise. " + "word " * 5000,
                                                "output": "x"})], "", ["--model", "tiny-random"],
     "eval", "context"),
    ("toml_unknown_key", GOOD, "colour = 1\n", [], "eval", "colour: unknown key"),
    ("toml_unknown_section", GOOD, "[trainig]\nrank = 8\n", [], "eval",
     "[trainig]: unknown section (did you mean 'training'?)"),
    ("toml_bad_type", GOOD, "[generation]\nmax_new_tokens = \"many\"\n", [], "eval",
     "[generation] max_new_tokens: must be an integer"),
    ("toml_zero_batch", GOOD, "[generation]\nbatch_size = 0\n", [], "eval",
     "[generation] batch_size: must be >= 1, got 0"),
    ("toml_dev_fraction", GOOD, "dev_fraction = 2.0\n", [], "eval",
     "dev_fraction: must be < 1"),
    ("toml_missing_dev_file", GOOD, 'dev = "nope.jsonl"\n', [], "eval", "nope.jsonl"),
    ("suite_unknown_check", GOOD, '[suite]\nversion = "1"\nchecks = [{name = "exact_mach", '
     'required = true}]\n', [], "cycle",
     "[suite] checks[0].name: unknown check 'exact_mach' (did you mean 'exact_match'?"),
    ("suite_no_version", GOOD, '[suite]\nchecks = [{name = "exact_match", required = true}]\n',
     [], "cycle", "[suite] version: is required"),
    ("suite_bad_param", GOOD, '[suite]\nversion = "1"\nchecks = [{name = "too_long", required = '
     'true, params = {max_wrds = 3}}]\n', [], "cycle",
     "[suite] checks[0].params: unknown param 'max_wrds'"),
    ("suite_missing_file", GOOD, '[suite]\nfile = "missing-suite.toml"\n', [], "cycle",
     "missing-suite.toml"),
    ("suite_none_required", GOOD, '[suite]\nversion = "1"\nchecks = [{name = "too_long"}]\n', [],
     "cycle", "[suite] checks: at least one check must be required"),
    ("training_negative_rank", GOOD, "[training]\nrank = -4\n", [], "cycle",
     "[training] rank: must be >= 1, got -4"),
    ("training_unknown_key", GOOD, "[training]\nlearnin_rate = 0.1\n", [], "cycle",
     "[training] learnin_rate: unknown key (did you mean 'learning_rate'?)"),
    ("targeted_zero_n", GOOD, "[targeted]\nn = 0\n", [], "cycle",
     "[targeted] n: must be >= 1, got 0"),
    ("targeted_unknown_strategy", GOOD, '[targeted]\nstrategies = ["retreival"]\n', [], "cycle",
     "[targeted] strategies[0]: must be one of"),
    ("targeted_literal_api_key", GOOD, '[targeted]\nstrategies = ["teacher"]\n[targeted.teacher]\n'
     'model = "m"\nbase_url = "http://127.0.0.1:1/v1"\napi_key = "sk-123"\n', [], "cycle",
     "[targeted.teacher] api_key: not allowed"),
    ("gate_bad_value", GOOD, '[gate]\nmin_gain = "lots"\n', [], "cycle",
     "[gate] min_gain: must be a number, got 'lots'"),
    ("benchmarks_negative_limit", GOOD, "[benchmarks]\nlimit = -1\n", [], "cycle",
     "[benchmarks] limit: must be >= 1, got -1"),
    ("benchmarks_missing_dir", GOOD, '[benchmarks]\ndata_dir = "no/such/dir"\n', [], "cycle",
     "[benchmarks] data_dir: directory"),
    ("cycle_unknown_key", GOOD, "[cycle]\nbase = \"x\"\n", [], "cycle", "[cycle] base: unknown key"),
    ("cycle_unknown_base_model", GOOD, '[cycle]\nbase_model = "gpt-17"\n', [], "cycle",
     "Unknown model 'gpt-17'"),
]


def _fingerprint(workspace: Path) -> tuple[str, list[str]]:
    data = (workspace / DB_NAME).read_bytes()
    return hashlib.sha256(data).hexdigest(), sorted(p.name for p in workspace.iterdir())


@pytest.fixture(scope="module")
def seeded_workspace(tmp_path_factory) -> Path:
    workspace = tmp_path_factory.mktemp("store")
    with Store(workspace) as store:
        store.put_model("m0", "tiny-random", "tiny-random")
    return workspace


def test_the_corpus_has_at_least_40_inputs():
    assert len(CASES) >= 40 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, tmp_path, seeded_workspace, capsys):
    name, lines, toml_extra, args, command, fragment = case
    data = lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode()
    (tmp_path / "test.jsonl").write_bytes(data)
    (tmp_path / "task.toml").write_text(BASE_TOML + toml_extra)
    before = _fingerprint(seeded_workspace)
    code = main([command, "--task", str(tmp_path / "task.toml"), "--workspace",
                 str(seeded_workspace), *args])
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith("evalloop: error:") and "\n" not in err, err
    assert fragment in err, err
    assert str(tmp_path) in err or fragment in err  # names the file, line or key
    assert _fingerprint(seeded_workspace) == before
