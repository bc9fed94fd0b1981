"""What loading a task did, per split and in one line (`Task.report.line()`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SplitReport:
    """What loading one split did; `repeated` rows repeat an earlier row exactly."""

    split: str
    rows: int
    repeated: int = 0
    dropped: int = 0  # exact repeats dropped (the train pool only)
    drawn_from: str = ""  # "train" when this dev split was drawn from the train file

    def text(self) -> str:
        if self.drawn_from:
            return f"{self.split} {self.rows} rows drawn from {self.drawn_from}"
        if self.split == "train":
            return f"{self.split} {self.rows} rows, {self.dropped} exact duplicates dropped"
        kept = f" ({self.repeated} repeated, kept as separate items)" if self.repeated else ""
        return f"{self.split} {self.rows} rows{kept}"


@dataclass(frozen=True)
class LoadReport:
    task: str
    splits: tuple[SplitReport, ...]
    answers: str = ""  # what the answers were found to be (AnswerModel.describe)

    def line(self) -> str:
        """e.g. `t: train 874 rows, 41 exact duplicates dropped; dev 83 rows drawn from train;
        test 328 rows (12 repeated, kept as separate items); answers: json (...)`."""
        return f"{self.task}: " + "; ".join([s.text() for s in self.splits]
                                            + ([self.answers] if self.answers else []))

    def get(self, split: str) -> SplitReport | None:
        return next((s for s in self.splits if s.split == split), None)
