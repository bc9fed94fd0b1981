"""What each cycle stage returns: frozen records, read by attribute. Each has `to_json()`, the
exact JSON the cycle has always stored in `cycle_stages.result` (a resumed cycle reads it back with
`from_json`, and the app and bench scripts read the stored JSON), so old stores resume unchanged.

    eval_champion_dev -> DevEvalResult       failures  -> FailuresResult
    targeted          -> TargetedResult      train     -> TrainStageResult
    eval_candidate    -> CandidateEvalResult prompt_arm -> PromptArmResult
    arena             -> ArenaResult         benchmarks -> BenchmarksResult
    gate              -> PromotionDecision   report     -> ReportResult
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from loop.cycle.gate import NOISE_Z, PromotionDecision, mcnemar_p
from loop.evaluation.evaluate import EvalSummary
from loop.targeted.pairs import PairsResult
from loop.targeted.batch import TargetedResult


@dataclass(frozen=True)
class DevEvalResult:
    """The champion's dev evaluation, whose failures the cycle targets."""

    run_id: str
    summary: EvalSummary  # without per-item outcomes

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "summary": self.summary.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> DevEvalResult:
        return cls(data["run_id"], EvalSummary.from_json(data["summary"]))


@dataclass(frozen=True)
class FailuresResult:
    """The dev run's stored failures (loop.failures.stage.failure_summary): rows as the CLI and
    the report show them."""

    run_id: str
    n_items: int
    n_failures: int
    categories: tuple[dict, ...]  # {category, count, share, examples}
    signatures: tuple[dict, ...]  # {signature, count, share, examples}
    clusters: tuple[dict, ...]  # {cluster_id, label, size, share, example_ids, ...}

    def to_json(self) -> dict:
        return {"run_id": self.run_id, "n_items": self.n_items, "n_failures": self.n_failures,
                "categories": list(self.categories), "signatures": list(self.signatures),
                "clusters": list(self.clusters)}

    @classmethod
    def from_json(cls, data: dict) -> FailuresResult:
        return cls(data["run_id"], data["n_items"], data["n_failures"],
                   tuple(data["categories"]), tuple(data.get("signatures", ())),
                   tuple(data["clusters"]))


@dataclass(frozen=True)
class TrainStageResult:
    """The candidate: the adapter trained by SFT, DPO or SFT then DPO ([training] method)."""

    method: str
    train_id: str
    adapter_dir: str
    candidate_name: str  # base+adapter_dir
    model_id: str
    steps: int
    train_loss: float | None
    best_eval_loss: float | None
    tokens_per_s: float
    elapsed_s: float
    sft_adapter_dir: str | None = None  # "sft" and "sft+dpo"
    pairs: PairsResult | None = None  # "dpo" and "sft+dpo"
    dpo_skipped: str | None = None  # "sft+dpo" without preference pairs: why
    search: tuple[dict, ...] = ()  # the recipe trials (loop/train/search.py), the kept one first

    def to_json(self) -> dict:
        head = {"method": self.method}
        if self.sft_adapter_dir is not None:
            head["sft_adapter_dir"] = self.sft_adapter_dir
        if self.pairs is not None:
            head["pairs"] = self.pairs.to_json()
        if self.dpo_skipped is not None:
            head["dpo_skipped"] = self.dpo_skipped
        tail = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("method", "sft_adapter_dir", "pairs", "dpo_skipped", "search")}
        if self.search:
            tail["search"] = list(self.search)
        return {**head, **tail}

    @classmethod
    def from_json(cls, data: dict) -> TrainStageResult:
        pairs = data.get("pairs")
        return cls(**{**data, "pairs": PairsResult.from_json(pairs) if pairs else None,
                      "search": tuple(data.get("search", ()))})


@dataclass(frozen=True)
class CandidateEvalResult:
    """The candidate on dev and test, and the champion on test, with per-item outcomes."""

    candidate_dev: EvalSummary
    candidate_test: EvalSummary
    champion_test: EvalSummary

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name).to_json(outcomes=True) for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict) -> CandidateEvalResult:
        return cls(**{f.name: EvalSummary.from_json(data[f.name]) for f in fields(cls)})


@dataclass(frozen=True)
class PromptArmResult:
    """Step one of the recipe beside the fine-tune: the champion prompted zero-shot and k-shot
    on dev, and whether the candidate beats k-shot prompting beyond noise on the same items."""

    skipped: bool = False
    reason: str | None = None  # why skipped
    shots: int = 0
    selection: str = "random"
    zero_shot: EvalSummary | None = None  # without per-item outcomes
    k_shot: EvalSummary | None = None
    n: int = 0  # dev items scored for both the k-shot champion and the candidate
    candidate_pass_rate: float = 0.0
    difference: float = 0.0  # candidate - k-shot champion, paired
    interval: tuple[float, float] = (0.0, 0.0)  # its 95% normal interval
    p_value: float = 1.0  # exact McNemar on the paired outcomes
    prompting_matches: bool = False  # the candidate is not better beyond noise
    per_category: dict[str, dict] = field(default_factory=dict)  # {n, zero_shot, k_shot, candidate}

    @classmethod
    def compare(cls, zero: EvalSummary, k_shot: EvalSummary, candidate: EvalSummary, shots: int,
                selection: str, alpha: float) -> PromptArmResult:
        """Pure: the paired dev outcomes of the k-shot champion and the candidate."""
        ids = sorted(set(k_shot.outcomes) & set(candidate.outcomes))
        prompted = [k_shot.outcomes[i] for i in ids]
        tuned = [candidate.outcomes[i] for i in ids]
        diffs = [int(b) - int(a) for a, b in zip(prompted, tuned)]
        n = len(ids)
        mean = sum(diffs) / n if n else 0.0
        se = (sum((d - mean) ** 2 for d in diffs) / (n - 1) / n) ** 0.5 if n > 1 else 0.0
        p = mcnemar_p(prompted, tuned)
        per_category = {c: {"n": row["n"], "zero_shot": row["pass_rate"],
                            "k_shot": k_shot.per_category.get(c, {}).get("pass_rate", 0.0),
                            "candidate": candidate.per_category.get(c, {}).get("pass_rate", 0.0)}
                        for c, row in zero.per_category.items()}
        return cls(shots=shots, selection=selection, zero_shot=_bare(zero), k_shot=_bare(k_shot),
                   n=n, candidate_pass_rate=sum(tuned) / n if n else 0.0, difference=mean,
                   interval=(mean - NOISE_Z * se, mean + NOISE_Z * se), p_value=p,
                   prompting_matches=bool(n) and not (mean > 0 and p < alpha)
                   and _improves(zero, k_shot, sum(tuned) / n),
                   per_category=per_category)

    @property
    def note(self) -> str:
        """One line for the gate's report."""
        if self.skipped:
            return f"prompt arm skipped: {self.reason}"
        k, cand = self.k_shot.pass_rate, self.candidate_pass_rate
        lo, hi = self.interval
        figures = (f"dev: zero-shot {self.zero_shot.pass_rate:.1%}, {self.shots}-shot "
                   f"{self.selection} {k:.1%}, candidate {cand:.1%}; candidate - {self.shots}-shot "
                   f"{self.difference:+.1%} [{lo:+.1%}, {hi:+.1%}], McNemar p = "
                   f"{self.p_value:.3g} on {self.n} items")
        if self.prompting_matches:
            return (f"{self.shots}-shot prompting of the champion matches the candidate within "
                    f"noise ({figures}): a fine-tune is not needed for this.")
        if not _improves(self.zero_shot, self.k_shot, cand):
            return (f"neither {self.shots}-shot prompting nor the candidate does better than the "
                    f"zero-shot champion ({figures}).")
        if self.difference > 0:
            return f"the candidate beats {self.shots}-shot prompting of the champion ({figures})."
        return f"{self.shots}-shot prompting of the champion does better than the candidate " \
               f"({figures})."

    def to_json(self) -> dict:
        if self.skipped:
            return {"skipped": True, "reason": self.reason}
        data = {f.name: getattr(self, f.name) for f in fields(self)
                if f.name not in ("skipped", "reason")}
        data.update(zero_shot=self.zero_shot.to_json(), k_shot=self.k_shot.to_json(),
                    interval=list(self.interval), note=self.note)
        return data

    @classmethod
    def from_json(cls, data: dict) -> PromptArmResult:
        if data.get("skipped"):
            return cls(skipped=True, reason=data.get("reason"))
        data = {k: v for k, v in data.items() if k != "note"}
        return cls(**{**data, "zero_shot": EvalSummary.from_json(data["zero_shot"]),
                      "k_shot": EvalSummary.from_json(data["k_shot"]),
                      "interval": tuple(data["interval"])})


def _improves(zero: EvalSummary, k_shot: EvalSummary, candidate_rate: float) -> bool:
    """Whether prompting or the candidate does better than the zero-shot champion at all (when
    neither does, "prompting matches" would say nothing)."""
    return max(k_shot.pass_rate, candidate_rate) > zero.pass_rate


def _bare(summary: EvalSummary) -> EvalSummary:
    """The summary as stored (per-item outcomes left out)."""
    return EvalSummary.from_json(summary.to_json())


@dataclass(frozen=True)
class ArenaResult:
    """Pairwise judging of champion vs candidate and the task's leaderboard ([cycle] arena)."""

    skipped: bool = False
    judged: int = 0
    new_matches: int = 0
    judge: str | None = None
    errors: int = 0
    ratings: dict[str, float] = field(default_factory=dict)  # model name -> Bradley-Terry
    leaderboard: tuple[dict, ...] = ()
    plot: str | None = None

    def to_json(self) -> dict:
        if self.skipped:
            return {"skipped": True}
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "skipped"}
        data["leaderboard"] = list(self.leaderboard)
        return data

    @classmethod
    def from_json(cls, data: dict) -> ArenaResult:
        if data.get("skipped"):
            return cls(skipped=True)
        return cls(**{**data, "leaderboard": tuple(data.get("leaderboard", ()))})


@dataclass(frozen=True)
class BenchmarksResult:
    """Benchmark deltas (candidate - champion) per "task/metric", with their standard errors;
    `paired` / `pooled`: the paired stats (evals.paired.PairedStat JSON) per benchmark metric
    and pooled over the benchmarks (empty in results stored before them); `items`: the seeded
    items asked of each benchmark (`limit`: their count when all are equal)."""

    deltas: dict[str, float] = field(default_factory=dict)
    delta_se: dict[str, float | None] = field(default_factory=dict)
    limit: int | None = None
    champion: dict[str, float] = field(default_factory=dict)
    candidate: dict[str, float] = field(default_factory=dict)
    skipped: bool = False
    reason: str | None = None  # why skipped
    paired: dict[str, dict] = field(default_factory=dict)
    pooled: dict[str, dict] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict:
        if self.skipped:
            return {"skipped": True, "deltas": self.deltas, "reason": self.reason}
        data = {"limit": self.limit, **({"items": self.items} if self.items else {}),
                "deltas": self.deltas, "delta_se": self.delta_se, "champion": self.champion,
                "candidate": self.candidate}
        return {**data, **({"paired": self.paired, "pooled": self.pooled} if self.paired else {})}

    @classmethod
    def from_json(cls, data: dict) -> BenchmarksResult:
        return cls(**data)


@dataclass(frozen=True)
class ReportResult:
    path: str  # the HTML report

    def to_json(self) -> dict:
        return {"path": self.path}

    @classmethod
    def from_json(cls, data: dict) -> ReportResult:
        return cls(data["path"])


@dataclass
class CycleResults:
    """What the stages returned so far; the runner fills one field per finished stage."""

    eval_champion_dev: DevEvalResult | None = None
    failures: FailuresResult | None = None
    targeted: TargetedResult | None = None
    train: TrainStageResult | None = None
    eval_candidate: CandidateEvalResult | None = None
    prompt_arm: PromptArmResult | None = None
    arena: ArenaResult | None = None
    benchmarks: BenchmarksResult | None = None
    gate: PromotionDecision | None = None
    report: ReportResult | None = None


RESULT_TYPES = {"eval_champion_dev": DevEvalResult, "failures": FailuresResult,
                "targeted": TargetedResult, "train": TrainStageResult,
                "eval_candidate": CandidateEvalResult, "prompt_arm": PromptArmResult,
                "arena": ArenaResult,
                "benchmarks": BenchmarksResult, "gate": PromotionDecision,
                "report": ReportResult}
