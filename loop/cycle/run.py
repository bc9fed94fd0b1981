"""One evaluation-driven iteration, readable top to bottom, resumable stage by stage.

    evaluate champion on dev -> failures -> targeted data -> train candidate
    -> evaluate candidate (dev, test) and champion (test) -> prompt arm (champion zero-/k-shot
    on dev) -> pairwise ratings -> benchmarks -> gate -> report

Each stage is `stage(ctx) -> record` (loop.cycle.results): it reads what earlier stages returned
and the task's settings (validated when the task loaded), calls library functions and returns a
small frozen record whose JSON `runstate` stores. A killed cycle resumes at the first stage not
marked done, reading the done ones back; stages write rows with content-hash ids, so nothing is
duplicated.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from loop import tracking
from loop.core import faults
from loop.core.settings import TaskSettings
from loop.core.settings_load import with_overrides
from loop.cycle import runstate
from loop.cycle.gate import GateInputs, PromotionDecision, decide
from loop.cycle.results import (RESULT_TYPES, ArenaResult, BenchmarksResult, CandidateEvalResult,
                                CycleResults, DevEvalResult, FailuresResult, PromptArmResult,
                                ReportResult, TrainStageResult)
from loop.store import cycles
from loop.data.tasks import Task, load_task
from loop.evaluation.evaluate import EvalSummary, evaluate
from loop.models.loading import ModelSpec, fingerprint, parse_model_name
from loop.store.db import Store, now
from loop.store.rows import GateDecisionRow, write
from loop.targeted.batch import TargetedResult

log = logging.getLogger(__name__)



@dataclass
class CycleContext:
    store: Store
    task: Task
    workspace: Path
    cycle_id: str
    champion: runstate.Champion
    progress: bool = True
    deadline: float | None = None  # time.monotonic() value after which no new stage starts
    results: CycleResults = field(default_factory=CycleResults)

    @property
    def settings(self) -> TaskSettings:
        return self.task.settings

    @property
    def dir(self) -> Path:
        path = self.workspace / "cycles" / self.cycle_id
        path.mkdir(parents=True, exist_ok=True)
        return path

    # Stages hand models to library functions as ModelSpecs; a name (`.name`) only where it is
    # stored or shown (the champion row, arena ratings, the report).
    @property
    def champion_model(self) -> ModelSpec:
        return parse_model_name(self.champion.model_name)

    @property
    def candidate(self) -> ModelSpec:
        """The train stage's adapter on the champion's base (the name it stored)."""
        return parse_model_name(self.candidate_name)

    @property
    def candidate_name(self) -> str:
        return self.results.train.candidate_name


# ---------------------------------------------------------------------------- stages

def eval_champion_dev(ctx: CycleContext) -> DevEvalResult:
    summary = evaluate(ctx.store, ctx.task, ctx.champion_model, "dev", progress=ctx.progress)
    return DevEvalResult(summary.run_id, summary)


def failures(ctx: CycleContext) -> FailuresResult:
    from loop.failures.stage import failure_summary

    return FailuresResult.from_json(failure_summary(ctx.store,
                                                    ctx.results.eval_champion_dev.run_id))


def targeted(ctx: CycleContext) -> TargetedResult:
    """Targeted rows for the dev failures plus the pool rows the cycle's plan picks within its
    time budget (loop/targeted/plan.py: the whole pool first, then what the champion does not
    know)."""
    from loop.targeted.cycle_data import build_cycle_data

    budget, champion = ctx.settings.cycle.max_minutes, ctx.champion_model
    return build_cycle_data(
        ctx.store, ctx.task, champion, ctx.results.eval_champion_dev.run_id,
        champion_trained=champion.adapter is not None,
        batch_id=ctx.cycle_id, out_dir=ctx.dir / "data", seed=ctx.settings.cycle.seed,
        budget_s=budget * 60 if budget else None, progress=ctx.progress)


def train(ctx: CycleContext) -> TrainStageResult:
    """[training] method: "sft" on the targeted data, "dpo" on preference pairs from the store,
    "grpo" on pool prompts rewarded by the suite (targeted pool rows first), or "sft+dpo" /
    "sft+grpo" (the second starts from, and is referenced to, the SFT adapter)."""

    config = ctx.settings.training
    plan = ctx.results.targeted.plan
    if plan and config.max_steps is None and plan["epochs"] != config.epochs:
        config = with_overrides(ctx.settings, "training", epochs=plan["epochs"])
    champion = ctx.champion_model
    model, extra = champion, {}
    if config.method in ("sft", "sft+dpo", "sft+grpo"):
        result, trials = _sft_search(ctx, config, champion)
        model = champion.with_adapter(result.adapter_dir)  # what DPO / GRPO continue from
        extra["sft_adapter_dir"] = result.adapter_dir
        extra["search"] = tuple(t.to_json() for t in trials)
    if config.method in ("dpo", "sft+dpo"):
        from loop.targeted.pairs import build_pairs
        from loop.train.dpo import train_dpo_for_task

        # rejected answers of failures: the champion's own, from this cycle's dev run
        pairs = build_pairs(ctx.store, ctx.task, out_dir=ctx.dir / "pairs",
                            failure_run=ctx.results.eval_champion_dev.run_id)
        extra["pairs"] = pairs
        if pairs.n_pairs or config.method == "dpo":  # "dpo" with no pairs: TrainingError
            result = train_dpo_for_task(ctx.store, ctx.task, ctx.workspace, pairs.dataset_path,
                                        model=model, dataset_hash=pairs.manifest_hash,
                                        config=config, progress=ctx.progress)
        else:
            extra["dpo_skipped"] = "no preference pairs after exclusions (see pairs.counts)"
    if config.method in ("grpo", "sft+grpo"):
        from loop.data.tasks import read_split
        from loop.train.grpo import train_grpo_for_task

        targeted_rows = read_split(Path(ctx.results.targeted.dataset_path), "train")
        result = train_grpo_for_task(ctx.store, ctx.task, ctx.workspace, model=model,
                                     targeted=targeted_rows, config=config,
                                     progress=ctx.progress)
    candidate = champion.with_adapter(result.adapter_dir)
    return TrainStageResult(
        method=config.method, train_id=result.train_id, adapter_dir=result.adapter_dir,
        candidate_name=candidate.name, model_id=fingerprint(candidate),
        steps=result.steps_done, train_loss=result.train_loss,
        best_eval_loss=result.best_eval_loss, tokens_per_s=result.tokens_per_s,
        elapsed_s=result.elapsed_s, **extra)


def _sft_search(ctx: CycleContext, config, model: ModelSpec):
    """SFT on the cycle's data for each trial the budget holds (loop/train/search.py: learning
    rates, and continuing from a trained champion or retraining from the base); the run with the
    best dev pass rate is the candidate. -> (its TrainResult, trials, kept one first)."""
    from loop.train.search import Trial, pick, recipe_trials
    from loop.train.sft import train_for_task

    data, plan = ctx.results.targeted, ctx.results.targeted.plan or {}
    # one trial's time: the rows written (targeted + pool) at the plan's estimated rate, and
    # its dev generation (a single trial skips that, but then the budget's split is moot)
    rows = plan.get("targeted_rows", 0) + plan.get("pool_rows", 0)
    one_run = rows * plan.get("epochs", 1.0) * plan.get("seconds_per_row_epoch", 0.0) \
        + plan.get("dev_eval_s", 0.0)
    plans = recipe_trials(config.learning_rate, one_run, plan.get("budget_s") or None,
                          enabled=config.search and bool(plan),
                          n_dev=len(ctx.task.splits.get("dev", ())),
                          champion_trained=model.adapter is not None)
    runs, trials = {}, []
    for trial in plans:
        rate = trial.learning_rate
        start = model if trial.start == "champion" else model.with_adapter(None)
        cfg = config if rate == config.learning_rate else \
            with_overrides(ctx.settings, "training", **{**_changed(config), "learning_rate": rate})
        result = train_for_task(ctx.store, ctx.task, ctx.workspace, model=start,
                                data_path=data.dataset_path, dataset_hash=data.manifest_hash,
                                config=cfg, progress=ctx.progress)
        trained = start.with_adapter(result.adapter_dir)
        dev = evaluate(ctx.store, ctx.task, trained, "dev", progress=ctx.progress) \
            if len(plans) > 1 else None
        runs[result.train_id] = result
        trials.append(Trial(rate, result.train_id, trained.name,
                            dev.pass_rate if dev else float("nan"), result.best_eval_loss,
                            result.elapsed_s, trial.start))
    best = pick(trials) if len(trials) > 1 else trials[0]
    return runs[best.train_id], [best] + [t for t in trials if t is not best]


def _changed(config) -> dict:
    """The [training] keys a stage changed from the TOML (the plan's epochs)."""
    return {"epochs": config.epochs} if config.max_steps is None else {}


def eval_candidate(ctx: CycleContext) -> CandidateEvalResult:
    return CandidateEvalResult(*(
        evaluate(ctx.store, ctx.task, model, split, progress=ctx.progress)
        for model, split in ((ctx.candidate, "dev"), (ctx.candidate, "test"),
                             (ctx.champion_model, "test"))))


def prompt_arm(ctx: CycleContext) -> PromptArmResult:
    """The champion prompted instead of trained: zero-shot and [cycle] prompt_shots-shot on dev
    ([generation] shot_selection), beside the candidate's dev outcomes."""
    from loop.evaluation.prompting import resolve_prompt, shot_pool

    k = ctx.settings.cycle.prompt_shots
    if not k or len(shot_pool(ctx.task)) <= k:
        return PromptArmResult(skipped=True, reason="[cycle] prompt_shots = 0" if not k else
                               f"fewer than {k + 1} train-pool rows to show")
    # zero-shot is the cycle's first stage's dev run (its summary is all the comparison reads)
    zero = ctx.results.eval_champion_dev.summary
    k_shot = evaluate(ctx.store, ctx.task, ctx.champion_model, "dev", progress=ctx.progress,
                      prompt=resolve_prompt(ctx.task, shots=k))
    return PromptArmResult.compare(zero, k_shot, ctx.results.eval_candidate.candidate_dev, k,
                                   ctx.settings.generation.shot_selection, ctx.settings.gate.alpha)


def arena(ctx: CycleContext) -> ArenaResult:
    from loop.evaluation.arena import run_arena

    if not ctx.settings.cycle.arena:
        return ArenaResult(skipped=True)
    return ArenaResult.from_json(run_arena(
        ctx.store, ctx.task, [ctx.champion.model_name, ctx.candidate_name], judge="reference",
        seed=ctx.settings.cycle.seed, plot_dir=ctx.dir / "report", progress=ctx.progress,
        runs=(ctx.results.eval_candidate.champion_test, ctx.results.eval_candidate.candidate_test)))


def benchmarks(ctx: CycleContext) -> BenchmarksResult:
    from loop.evaluation.benchmarks import cycle_items, paired_deltas

    settings = ctx.settings.benchmarks
    if not ctx.settings.cycle.benchmarks or settings is None:
        return BenchmarksResult(skipped=True, reason="no [benchmarks] section" if settings is None
                                else "disabled in [cycle]")
    gate = ctx.settings.gate
    return BenchmarksResult(**paired_deltas(
        ctx.store, ctx.champion_model, ctx.candidate, settings,
        cycle_items(settings), ctx.settings.cycle.seed, ctx.progress,
        alpha=gate.alpha, power=gate.power))


def gate(ctx: CycleContext) -> PromotionDecision:
    from evals.paired import PairedStat
    from evals.suites import assert_comparable

    ev = ctx.results.eval_candidate
    assert_comparable(ev.champion_test.versions(), ev.candidate_test.versions())
    categories = {e.id: e.category for e in ctx.task.split("test")}
    ratings, bench = ctx.results.arena.ratings, ctx.results.benchmarks
    inputs = GateInputs(
        champion=ev.champion_test.outcomes, candidate=ev.candidate_test.outcomes,
        categories=categories,
        champion_rating=ratings.get(ctx.champion.model_name),
        candidate_rating=ratings.get(ctx.candidate_name),
        benchmark_stats={k: PairedStat.from_json(v) for k, v in bench.paired.items()},
        pooled_stats={k: PairedStat.from_json(v) for k, v in bench.pooled.items()},
        benchmark_deltas=bench.deltas, benchmark_se=bench.delta_se)
    config = ctx.settings.gate
    if not ctx.settings.cycle.arena:
        config = config.model_copy(update={"require_rating": False})
    decision = decide(inputs, config)
    write(ctx.store, [GateDecisionRow(
        ctx.cycle_id, decision.promote, decision.p_value, decision.to_json()["reasons"],
        decision.champion_pass_rate, decision.candidate_pass_rate, now())],
        on_conflict="replace")
    if decision.promote:
        promoted = ctx.candidate
        candidate = runstate.Champion(fingerprint(promoted), promoted.name)
        runstate.set_champion(ctx.store, ctx.task.name, candidate, ctx.cycle_id,
                              "promoted by the gate")
    return decision


def report(ctx: CycleContext) -> ReportResult:
    from loop.cycle.report import write_report

    return ReportResult(str(write_report(ctx.store, ctx.task, ctx.cycle_id, ctx.results,
                                         ctx.dir)))


STAGES = (eval_champion_dev, failures, targeted, train, eval_candidate, prompt_arm, arena,
          benchmarks, gate, report)


# ---------------------------------------------------------------------------- runner

def run_cycle(task_path: str | Path, workspace: str | Path, force: bool = False,
              progress: bool = True, deadline: float | None = None) -> dict:
    """Run (or resume) the task's current cycle; returns its summary (see `summarize`)."""
    from loop.cycle.nightly import BudgetExceeded

    task = load_task(task_path)  # every settings problem, before any model or the store
    base_model = task.settings.cycle.base_model
    base_id = fingerprint(parse_model_name(base_model))  # an unknown model fails here too
    workspace = Path(workspace)
    with Store(workspace) as store:
        champion = runstate.current_champion(store, task.name, base_model, base_id)
        inputs = runstate.cycle_inputs_hash(task.name, task.data_hash, champion.model_id,
                                            task.settings.tables)
        cycle_id, finished = runstate.open_cycle(store, task.name, champion, inputs, force)
        ctx = CycleContext(store, task, workspace, cycle_id, champion, progress, deadline)
        for stage in STAGES:
            name = stage.__name__
            done = cycles.stage_result(store, cycle_id, name)
            if done is not None:
                setattr(ctx.results, name, RESULT_TYPES[name].from_json(done))
                continue
            if deadline is not None and time.monotonic() > deadline:
                raise BudgetExceeded(f"Time budget used up before stage '{name}' of "
                                     f"cycle {cycle_id}; the next run resumes there.")
            log.info("cycle %s: stage %s", cycle_id, name)
            runstate.mark_stage(store, cycle_id, name, "running")
            faults.arm(name)  # no-op unless the reliability suite asks for a kill
            try:
                with tracking.cycle_stage(workspace, task, cycle_id, stage.__name__):
                    result = stage(ctx)
            except BaseException as exc:
                runstate.mark_stage(store, cycle_id, name, "failed", error=str(exc))
                raise
            setattr(ctx.results, name, result)
            runstate.mark_stage(store, cycle_id, name, "done", result.to_json())
            if stage is train:
                cycles.set_candidate(store, cycle_id, result.model_id, ctx.candidate_name)
        summary = summarize(ctx, already_finished=finished)
        if not finished:
            cycles.finish_cycle(store, cycle_id, summary)
        tracking.finish_cycle(workspace, task, summary)
        return summary


def _stage_items(results: CycleResults) -> dict[str, tuple[float, str]]:
    """What each stage processed, for an items/s figure: (count, unit)."""
    dev, data, trained = results.eval_champion_dev, results.targeted, results.train
    ev = results.eval_candidate
    out = {
        "eval_champion_dev": (dev.summary.generated if dev else 0, "generated"),
        "targeted": (data.accepted + data.replay if data else 0, "examples"),
        "train": ((trained.tokens_per_s or 0) * (trained.elapsed_s or 0) if trained else 0,
                  "tokens"),
        "eval_candidate": (sum(s.generated for s in (ev.candidate_dev, ev.candidate_test,
                                                     ev.champion_test)) if ev else 0,
                           "generated"),
    }
    return {stage: item for stage, item in out.items() if item[0]}


def stage_times(ctx: CycleContext) -> dict[str, dict]:
    """Per stage: wall seconds and, where a stage processes countable items, items/s."""
    seconds = cycles.stage_seconds(ctx.store, ctx.cycle_id)
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
    """The cycle's JSON summary (also stored in `cycles.summary`)."""
    r = ctx.results
    ev = r.eval_candidate

    def scores(summary: EvalSummary) -> dict:
        return {"pass_rate": summary.pass_rate,
                "per_category": {c: v["pass_rate"] for c, v in summary.per_category.items()}}

    return {
        "cycle_id": ctx.cycle_id, "task": ctx.task.name, "already_finished": already_finished,
        "stage_times": stage_times(ctx),
        "champion": {"name": ctx.champion.model_name, "model_id": ctx.champion.model_id,
                     "dev": scores(r.eval_champion_dev.summary), "test": scores(ev.champion_test)},
        "candidate": {"name": ctx.candidate_name, "model_id": r.train.model_id,
                      "dev": scores(ev.candidate_dev), "test": scores(ev.candidate_test)},
        "benchmark_deltas": r.benchmarks.deltas,
        "prompt_arm": r.prompt_arm.to_json() if r.prompt_arm else None,
        "gate": r.gate.to_json(),
        "report": r.report.path,
    }
