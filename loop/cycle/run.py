"""One evaluation-driven iteration, readable top to bottom, resumable stage by stage.

    evaluate champion on dev -> failures -> targeted data -> train candidate
    -> evaluate candidate (dev, test) and champion (test) -> pairwise ratings -> benchmarks
    -> gate -> report

Each stage is `stage(ctx) -> dict`: it reads what earlier stages stored, calls library functions
and returns a small JSON result that `runstate` records. A killed cycle resumes at the first
stage not marked done; stages write rows with content-hash ids, so nothing is duplicated.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from loop.core.errors import ConfigError
from loop.evaluation.evaluate import evaluate
from loop.cycle.gate import GateConfig, GateInputs, decide
from loop.models.loading import DEFAULT_MODEL, fingerprint, parse_model_name
from loop import tracking
from loop.core import faults
from loop.cycle import runstate
from loop.store.db import Store, now
from loop.data.tasks import Task, load_task

log = logging.getLogger(__name__)

DEFAULT_BENCHMARK_LIMIT = 50  # items per benchmark task in a cycle when [benchmarks] has none
CYCLE_KEYS = {"base_model": str, "seed": int, "benchmarks": bool, "arena": bool}


@dataclass(frozen=True)
class CycleConfig:
    base_model: str = DEFAULT_MODEL
    seed: int = 0
    benchmarks: bool = True  # set false to skip the forgetting check (e.g. no benchmark data)
    arena: bool = True

    @classmethod
    def from_section(cls, section: dict) -> CycleConfig:
        errors = [f"unknown key cycle.{k}" for k in section if k not in CYCLE_KEYS]
        errors += [f"cycle.{k} must be {t.__name__}" for k, t in CYCLE_KEYS.items()
                   if k in section and not isinstance(section[k], t)]
        if errors:
            raise ConfigError("Invalid [cycle] section: " + "; ".join(errors) + ".")
        return cls(**section)


@dataclass
class CycleContext:
    store: Store
    task: Task
    workspace: Path
    cycle_id: str
    champion: runstate.Champion
    config: CycleConfig
    progress: bool = True
    deadline: float | None = None  # time.monotonic() value after which no new stage starts
    results: dict[str, dict] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        path = self.workspace / "cycles" / self.cycle_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def candidate_name(self) -> str:
        return self.results["train"]["candidate_name"]


# ---------------------------------------------------------------------------- stages

def eval_champion_dev(ctx: CycleContext) -> dict:
    summary = evaluate(ctx.store, ctx.task, ctx.champion.model_name, "dev", progress=ctx.progress)
    return {"run_id": summary.run_id, "summary": summary.to_json()}


def failures(ctx: CycleContext) -> dict:
    from loop.failures.stage import failure_summary

    return failure_summary(ctx.store, ctx.results["eval_champion_dev"]["run_id"])


def targeted(ctx: CycleContext) -> dict:
    from loop.targeted.stage import generate_targeted

    result = generate_targeted(ctx.store, ctx.task, ctx.results["eval_champion_dev"]["run_id"],
                               batch_id=ctx.cycle_id, out_dir=ctx.dir / "data",
                               seed=ctx.config.seed, progress=ctx.progress)
    return result.to_json()


def train(ctx: CycleContext) -> dict:
    """[training] method: "sft" on the targeted data, "dpo" on preference pairs from the store,
    or "sft+dpo" (DPO starts from, and is referenced to, the SFT adapter)."""
    from loop.train.sft import train_for_task
    from loop.train.config import TrainConfig

    config = TrainConfig.from_section(ctx.task.config.section("training"),
                                      where=f"{ctx.task.config.path} [training]")
    spec = parse_model_name(ctx.champion.model_name)
    model, out = ctx.champion.model_name, {"method": config.method}
    if config.method in ("sft", "sft+dpo"):
        data = ctx.results["targeted"]
        result = train_for_task(ctx.store, ctx.task, ctx.workspace, model=model,
                                data_path=data["dataset_path"], dataset_hash=data["manifest_hash"],
                                config=config, progress=ctx.progress)
        model, out["sft_adapter_dir"] = f"{spec.base}+{result.adapter_dir}", result.adapter_dir
    if config.method in ("dpo", "sft+dpo"):
        from loop.targeted.pairs import build_pairs
        from loop.train.dpo import train_dpo_for_task

        # rejected answers of failures: the champion's own, from this cycle's dev run
        pairs = build_pairs(ctx.store, ctx.task, out_dir=ctx.dir / "pairs",
                            failure_run=ctx.results["eval_champion_dev"]["run_id"])
        out["pairs"] = pairs.to_json()
        if pairs.n_pairs or config.method == "dpo":  # "dpo" with no pairs: TrainingError
            result = train_dpo_for_task(ctx.store, ctx.task, ctx.workspace, pairs.dataset_path,
                                        model=model, dataset_hash=pairs.manifest_hash,
                                        config=config, progress=ctx.progress)
        else:
            out["dpo_skipped"] = "no preference pairs after exclusions (see pairs.counts)"
    name = f"{spec.base}+{result.adapter_dir}"
    return {**out, "train_id": result.train_id, "adapter_dir": result.adapter_dir,
            "candidate_name": name, "model_id": fingerprint(parse_model_name(name)),
            "steps": result.steps_done, "train_loss": result.train_loss,
            "best_eval_loss": result.best_eval_loss, "tokens_per_s": result.tokens_per_s,
            "elapsed_s": result.elapsed_s}


def eval_candidate(ctx: CycleContext) -> dict:
    out = {}
    for name, model, split in (("candidate_dev", ctx.candidate_name, "dev"),
                               ("candidate_test", ctx.candidate_name, "test"),
                               ("champion_test", ctx.champion.model_name, "test")):
        summary = evaluate(ctx.store, ctx.task, model, split, progress=ctx.progress)
        out[name] = summary.to_json(outcomes=True)
    return out


def arena(ctx: CycleContext) -> dict:
    from evals.arena import run_arena

    if not ctx.config.arena:
        return {"skipped": True}
    return run_arena(ctx.store, ctx.task, [ctx.champion.model_name, ctx.candidate_name],
                     judge="reference", seed=ctx.config.seed, plot_dir=ctx.dir / "report",
                     progress=ctx.progress)


def benchmarks(ctx: CycleContext) -> dict:
    from evals.benchmarks import headline, run_benchmarks, settings_from_section

    section = ctx.task.config.section("benchmarks")
    if not ctx.config.benchmarks or not section:
        return {"skipped": True, "deltas": {},
                "reason": "no [benchmarks] section" if not section else "disabled in [cycle]"}
    settings = settings_from_section(section, ctx.task.config.path.parent)
    limit = settings.limit or DEFAULT_BENCHMARK_LIMIT
    runs, errs = {}, {}
    for role, model in (("champion", ctx.champion.model_name), ("candidate", ctx.candidate_name)):
        results = [r for r in headline(run_benchmarks(
            ctx.store, model, settings.tasks, limit, settings.data_dir, settings.backend,
            progress=ctx.progress, seed=ctx.config.seed))
            if r.task == r.benchmark and r.value is not None and r.higher_is_better is not False]
        runs[role] = {(r.benchmark, r.metric): r.value for r in results}
        errs[role] = {(r.benchmark, r.metric): r.stderr or 0.0 for r in results}
    shared = [k for k in runs["champion"] if k in runs["candidate"]]
    deltas = {f"{b}/{m}": runs["candidate"][(b, m)] - runs["champion"][(b, m)] for b, m in shared}
    # unpaired standard error of the difference: conservative for the same items
    delta_se = {f"{b}/{m}": (errs["candidate"][(b, m)] ** 2 + errs["champion"][(b, m)] ** 2) ** 0.5
                for b, m in shared}
    return {"limit": limit, "deltas": deltas, "delta_se": delta_se,
            "champion": {f"{b}/{m}": v for (b, m), v in runs["champion"].items()},
            "candidate": {f"{b}/{m}": v for (b, m), v in runs["candidate"].items()}}


def gate(ctx: CycleContext) -> dict:
    from evals.suites import assert_comparable

    ev = ctx.results["eval_candidate"]
    assert_comparable({"__suite__": ev["champion_test"]["suite_version"]},
                      {"__suite__": ev["candidate_test"]["suite_version"]})
    categories = {e.id: e.category for e in ctx.task.split("test")}
    ratings = ctx.results["arena"].get("ratings", {})
    inputs = GateInputs(
        champion=ev["champion_test"]["outcomes"], candidate=ev["candidate_test"]["outcomes"],
        categories=categories,
        champion_rating=ratings.get(ctx.champion.model_name),
        candidate_rating=ratings.get(ctx.candidate_name),
        benchmark_deltas=ctx.results["benchmarks"].get("deltas", {}),
        benchmark_se=ctx.results["benchmarks"].get("delta_se", {}))
    config = GateConfig.from_section(ctx.task.config.section("gate"))
    if not ctx.config.arena:
        config = GateConfig(**{**config.__dict__, "require_rating": False})
    decision = decide(inputs, config)
    ctx.store.insert("gate_decisions", [{
        "cycle_id": ctx.cycle_id, "promote": decision.promote, "p_value": decision.p_value,
        "reasons": [r.__dict__ for r in decision.reasons],
        "champion_pass_rate": decision.champion_pass_rate,
        "candidate_pass_rate": decision.candidate_pass_rate, "created_at": now()}],
        on_conflict="replace")
    if decision.promote:
        candidate = runstate.Champion(fingerprint(parse_model_name(ctx.candidate_name)),
                                      ctx.candidate_name)
        runstate.set_champion(ctx.store, ctx.task.name, candidate, ctx.cycle_id,
                              "promoted by the gate")
    return decision.to_json()


def report(ctx: CycleContext) -> dict:
    from loop.cycle.report import write_report

    return {"path": str(write_report(ctx.store, ctx.task, ctx.cycle_id, ctx.results, ctx.dir))}


STAGES = (eval_champion_dev, failures, targeted, train, eval_candidate, arena, benchmarks, gate,
          report)


# ---------------------------------------------------------------------------- runner

def validate_sections(task: Task) -> CycleConfig:
    """Check every stage's TOML section before any model or the store is touched; report all
    problems together."""
    from evals.benchmarks import settings_from_section
    from evals.suites import load_suite
    from loop.targeted.inputs import targeted_config
    from loop.train.config import TrainConfig

    cfg = task.config
    checks = [
        lambda: CycleConfig.from_section(cfg.section("cycle")),
        lambda: load_suite(cfg),
        lambda: targeted_config(cfg),
        lambda: TrainConfig.from_section(cfg.section("training"), where=f"{cfg.path} [training]"),
        lambda: GateConfig.from_section(cfg.section("gate")),
        lambda: settings_from_section(cfg.section("benchmarks"), cfg.path.parent)
        if cfg.section("benchmarks") else None,
    ]
    errors = []
    for check in checks:
        try:
            check()
        except ConfigError as exc:
            errors.append(str(exc).rstrip("."))
    if errors:
        raise ConfigError(f"Task {cfg.path} cannot run a cycle: " + "; ".join(errors) + ".")
    cycle_config = CycleConfig.from_section(cfg.section("cycle"))
    parse_model_name(cycle_config.base_model)
    return cycle_config


def run_cycle(task_path: str | Path, workspace: str | Path, force: bool = False,
              progress: bool = True, deadline: float | None = None) -> dict:
    """Run (or resume) the task's current cycle; returns its summary (see `summarize`)."""
    from loop.cycle.nightly import BudgetExceeded

    task = load_task(task_path)
    config = validate_sections(task)
    workspace = Path(workspace)
    with Store(workspace) as store:
        base_id = fingerprint(parse_model_name(config.base_model))
        champion = runstate.current_champion(store, task.name, config.base_model, base_id)
        inputs = runstate.cycle_inputs_hash(task.name, task.data_hash, champion.model_id,
                                            task.config.sections)
        cycle_id, finished = runstate.open_cycle(store, task.name, champion, inputs, force)
        ctx = CycleContext(store, task, workspace, cycle_id, champion, config, progress, deadline)
        for stage in STAGES:
            done = runstate.stage_result(store, cycle_id, stage.__name__)
            if done is not None:
                ctx.results[stage.__name__] = done
                continue
            if deadline is not None and time.monotonic() > deadline:
                raise BudgetExceeded(f"Time budget used up before stage '{stage.__name__}' of "
                                     f"cycle {cycle_id}; the next run resumes there.")
            log.info("cycle %s: stage %s", cycle_id, stage.__name__)
            runstate.mark_stage(store, cycle_id, stage.__name__, "running")
            faults.arm(stage.__name__)  # no-op unless the reliability suite asks for a kill
            try:
                with tracking.cycle_stage(workspace, task, cycle_id, stage.__name__):
                    ctx.results[stage.__name__] = stage(ctx)
            except BaseException as exc:
                runstate.mark_stage(store, cycle_id, stage.__name__, "failed", error=str(exc))
                raise
            runstate.mark_stage(store, cycle_id, stage.__name__, "done",
                                ctx.results[stage.__name__])
            if stage is train:
                runstate.set_candidate(store, cycle_id, ctx.results["train"]["model_id"],
                                       ctx.candidate_name)
        summary = summarize(ctx, already_finished=finished)
        if not finished:
            runstate.finish_cycle(store, cycle_id, summary)
        tracking.finish_cycle(workspace, task, summary)
        return summary


def _stage_items(results: dict) -> dict[str, tuple[float, str]]:
    """What each stage processed, for an items/s figure: (count, unit)."""
    ev, train_result = results.get("eval_candidate", {}), results.get("train", {})
    out = {
        "eval_champion_dev": (results.get("eval_champion_dev", {}).get("summary", {})
                              .get("generated", 0), "generated"),
        "targeted": (results.get("targeted", {}).get("accepted", 0)
                     + results.get("targeted", {}).get("replay", 0), "examples"),
        "train": ((train_result.get("tokens_per_s") or 0) * (train_result.get("elapsed_s") or 0),
                  "tokens"),
        "eval_candidate": (sum(v.get("generated", 0) for v in ev.values()
                               if isinstance(v, dict)), "generated"),
    }
    return {stage: item for stage, item in out.items() if item[0]}


def stage_times(ctx: CycleContext) -> dict[str, dict]:
    """Per stage: wall seconds and, where a stage processes countable items, items/s."""
    seconds = runstate.stage_seconds(ctx.store, ctx.cycle_id)
    items = _stage_items(ctx.results)
    out = {}
    for stage in STAGES:
        name = stage.__name__
        if name not in seconds:
            continue
        row: dict = {"seconds": round(seconds[name], 2)}
        if name in items and seconds[name] > 0:
            count, unit = items[name]
            row.update({"items": int(count), "unit": unit,
                        "per_s": round(count / seconds[name], 3)})
        out[name] = row
    return out


def summarize(ctx: CycleContext, already_finished: bool = False) -> dict:
    ev = ctx.results["eval_candidate"]
    bench = ctx.results["benchmarks"]

    def scores(summary_json: dict) -> dict:
        return {"pass_rate": summary_json["pass_rate"],
                "per_category": {c: v["pass_rate"] for c, v in
                                 summary_json["per_category"].items()}}

    return {
        "cycle_id": ctx.cycle_id, "task": ctx.task.name, "already_finished": already_finished,
        "stage_times": stage_times(ctx),
        "champion": {"name": ctx.champion.model_name, "model_id": ctx.champion.model_id,
                     "dev": scores(ctx.results["eval_champion_dev"]["summary"]),
                     "test": scores(ev["champion_test"])},
        "candidate": {"name": ctx.candidate_name, "model_id": ctx.results["train"]["model_id"],
                      "dev": scores(ev["candidate_dev"]), "test": scores(ev["candidate_test"])},
        "benchmark_deltas": bench.get("deltas", {}),
        "gate": ctx.results["gate"],
        "report": ctx.results["report"]["path"],
    }
