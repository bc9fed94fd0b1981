"""What `evalloop train` runs, by the task's `[training] method` (the cycle's train stage runs the
same methods on its own data, loop/cycle/run.py).

    result = train_by_method(store, task, workspace, model="smollm2-135m-instruct")
"""

from __future__ import annotations

from pathlib import Path

from loop.models.loading import DEFAULT_MODEL, ModelSpec, as_model_spec
from loop.train.config import TrainConfig, TrainResult


def train_by_method(store, task, workspace, model: str | ModelSpec = DEFAULT_MODEL,
                    data_path=None, config: TrainConfig | None = None,
                    progress: bool = True) -> TrainResult:
    """"sft" on the data (default: the task's train split); "dpo" on the store's preference
    pairs (`evalloop pairs`; none is a TrainingError); "grpo" on the pool's prompts rewarded by
    the suite (the data's rows first); "sft+dpo" / "sft+grpo": SFT, then the second method from
    (and referenced to) the SFT adapter ("sft+dpo" without pairs keeps the SFT adapter)."""
    from loop.train import dpo, grpo, sft
    from loop.targeted import pairs as preference_pairs

    config = config or task.settings.training
    result = None
    if config.method in ("sft", "sft+dpo", "sft+grpo"):
        result = sft.train_for_task(store, task, workspace, model=model, data_path=data_path,
                                    config=config, progress=progress)
        model = as_model_spec(model).with_adapter(result.adapter_dir)
    if config.method in ("dpo", "sft+dpo"):
        found = preference_pairs.build_pairs(store, task)
        if found.n_pairs or result is None:
            result = dpo.train_dpo_for_task(store, task, workspace, found.dataset_path,
                                            model=model, dataset_hash=found.manifest_hash,
                                            config=config, progress=progress)
    if config.method in ("grpo", "sft+grpo"):
        from loop.data.tasks import read_split

        rows = read_split(Path(data_path), "train") if data_path else ()
        result = grpo.train_grpo_for_task(store, task, workspace, model=model, targeted=rows,
                                          config=config, progress=progress)
    return result
