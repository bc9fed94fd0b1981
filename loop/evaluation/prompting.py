"""What a model is shown beside the item: the system prompt, the instruction's wording and
few-shot examples from the task's train pool. Step one of the recipe is to try this before
training (`evalloop eval --shots 4`, `--prompt NAME`, the cycle's prompt arm).

    setting = resolve_prompt(task, shots=4, selection="nearest")   # [generation], [[prompts]]
    shots = choose_shots(task, examples, setting, embed)           # pool rows per item
    prompts = render_prompts(tokenizer, task, examples, setting, shots)

Shots come from the train pool only, never a dev or test item (nor a pool row asking the same
question as one), and never the item itself. `random` draws one seeded order of the pool, so
every item gets the same rows and the prompts keep one long shared prefix (the fast decode path
of loop/models/decode.py); `nearest` gives each item the pool rows whose question's varying
part (the task's template removed, as targeted retrieval compares) embeds closest, nearest last.
Selection is pure: the embedder is passed in.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np

from loop.core.errors import ConfigError, TaskDataError
from loop.core.prompts import build_prompt, user_message
from loop.core.records import Example, content_hash
from loop.data.tasks import Task

INSTRUCTION_SLOT = "{instruction}"
Embed = Callable[[Sequence[str]], np.ndarray]


@dataclass(frozen=True)
class PromptSetting:
    """A prompt beyond the item itself; the default is the task's own, zero-shot."""

    name: str = ""  # a [[prompts]] variant, "" for the task's own prompt
    system_prompt: str | None = None  # None: the task's system_prompt
    instruction: str | None = None  # None: each row's own; INSTRUCTION_SLOT stands for it
    shots: int = 0
    selection: str = "random"  # "random" | "nearest"
    seed: int = 0  # random selection

    def shot_identity(self) -> list[str]:
        """What joins the generation hash: nothing for zero-shot, so earlier predictions stay
        reusable."""
        if not self.shots:
            return []
        seed = f"-seed{self.seed}" if self.selection == "random" else ""
        return [f"shots-{self.shots}-{self.selection}{seed}"]

    def wording_identity(self) -> list[str]:
        """What joins a run's id besides the shots (the prompt text already differs)."""
        return [content_hash("prompt", self.system_prompt, self.instruction)] \
            if (self.system_prompt, self.instruction) != (None, None) else []

    @property
    def label(self) -> str:
        """e.g. "zero-shot", "4-shot random (seed 0)", "concise: 4-shot nearest"."""
        shots = "zero-shot" if not self.shots else f"{self.shots}-shot {self.selection}" + (
            f" (seed {self.seed})" if self.selection == "random" else "")
        return f"{self.name}: {shots}" if self.name else shots

    @property
    def is_default(self) -> bool:
        """The task's own prompt, zero-shot, whatever the variant is called."""
        return self.content() == PromptSetting().content()

    def content(self) -> dict:
        """What the model is shown: everything but the name."""
        return {k: v for k, v in asdict(self).items() if k != "name"}

    def to_json(self) -> dict:
        return asdict(self)


def resolve_prompt(task: Task, name: str | None = None, shots: int | None = None,
                   selection: str | None = None) -> PromptSetting:
    """[generation] shots, then the [[prompts]] variant `name`, then explicit flags."""
    gen = task.settings.generation
    setting = PromptSetting(shots=gen.shots, selection=gen.shot_selection, seed=gen.shot_seed)
    if name:
        variants = {p.name: p for p in task.settings.prompts}
        if name not in variants:
            close = difflib.get_close_matches(name, list(variants), n=1)
            known = f"did you mean '{close[0]}'?" if close else \
                f"known: {', '.join(variants)}" if variants else "the task has no [[prompts]]"
            raise ConfigError(f"Task '{task.name}' has no prompt named '{name}' ({known}).")
        v = variants[name]
        setting = replace(setting, name=name, system_prompt=v.system_prompt,
                          instruction=v.instruction,
                          shots=setting.shots if v.shots is None else v.shots,
                          selection=v.shot_selection or setting.selection)
    if shots is not None:
        if shots < 0:
            raise TaskDataError(f"--shots must be 0 or more, got {shots}.")
        setting = replace(setting, shots=shots)
    if selection is not None:
        setting = replace(setting, selection=selection)
    if setting.selection not in ("random", "nearest"):
        raise ConfigError(f"Shot selection must be 'random' or 'nearest', got "
                          f"'{setting.selection}'.")
    if setting.shots:
        check_pool(task, setting.shots)
    return setting


def check_pool(task: Task, shots: int) -> tuple[Example, ...]:
    """The shot pool, when it has enough rows for `shots` (one spare: an item is never its
    own shot)."""
    pool = shot_pool(task)
    if len(pool) < shots + 1:
        raise TaskDataError(
            f"{shots} shots need more pool rows: task '{task.name}' has {len(pool)} train rows "
            "that are not dev or test items (give a 'train' file, or fewer --shots).")
    return pool


# ---------------------------------------------------------------------------- selection (pure)

def shot_pool(task: Task) -> tuple[Example, ...]:
    """The train rows a prompt may show: none that is a dev or test item by id, nor one asking
    a dev or test item's question."""
    held_out = [e for split in ("dev", "test") for e in task.splits.get(split, ())]
    ids, questions = {e.id for e in held_out}, {user_message(e).strip() for e in held_out}
    return tuple(e for e in task.splits.get("train", ())
                 if e.id not in ids and user_message(e).strip() not in questions)


def random_shots(pool: Sequence[Example], items: Sequence[Example], k: int,
                 seed: int) -> list[tuple[Example, ...]]:
    """The first k rows of one seeded order of the pool for every item (an item that is itself
    among them gets the next row instead), so the items share one prefix."""
    order = [pool[i] for i in np.random.default_rng(seed).permutation(len(pool))]
    head = order[:k + 1]  # one spare covers an item that is one of the first k
    return [tuple([e for e in head if e.id != item.id][:k]) for item in items]


def nearest_shots(pool: Sequence[Example], items: Sequence[Example], k: int, embed: Embed,
                  vary: Callable[[str], str]) -> list[tuple[Example, ...]]:
    """Each item's k pool rows with the most similar question (cosine of the embedded varying
    parts), least similar first so the nearest sits next to the question; ties by pool order."""
    def unit(texts: list[str]) -> np.ndarray:
        vecs = np.asarray(embed(texts), dtype=np.float32)
        return vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)

    pool_vecs = unit([vary(user_message(e)) for e in pool])
    item_vecs = unit([vary(user_message(e)) for e in items])
    sims = item_vecs @ pool_vecs.T
    pool_ids = np.array([e.id for e in pool])
    out = []
    for row, item in zip(sims, items):
        row = np.where(pool_ids == item.id, -np.inf, row)
        best = np.argsort(-row, kind="stable")[:k]
        out.append(tuple(pool[i] for i in best[::-1]))
    return out


def choose_shots(task: Task, items: Sequence[Example], setting: PromptSetting,
                 embed: Embed | None = None) -> list[tuple[Example, ...]]:
    """The shots of each item under `setting`; `embed` (texts -> vectors) for "nearest"."""
    if not setting.shots:
        return [() for _ in items]
    pool = check_pool(task, setting.shots)
    if setting.selection == "random":
        return random_shots(pool, items, setting.shots, setting.seed)
    if embed is None:
        raise ConfigError("Nearest shot selection needs an embedder.")
    # compared by the varying part, as retrieval compares
    return nearest_shots(pool, items, setting.shots, embed, task.varying_part())


def shot_embedder(store, setting: PromptSetting):
    """The scoring side's sentence embedder, cached in the store, when `setting` needs one."""
    if not setting.shots or setting.selection != "nearest":
        return None
    from evals.similarity import CachedEmbedder
    from loop.store.embeddings import EmbeddingCache

    return CachedEmbedder(EmbeddingCache(store)).encode


def reworded(example: Example, instruction: str | None) -> Example:
    """The example with a variant's instruction (INSTRUCTION_SLOT: the row's own)."""
    if instruction is None:
        return example
    return replace(example, instruction=instruction.replace(INSTRUCTION_SLOT,
                                                            example.instruction))


def render_prompts(tokenizer, task: Task, items: Sequence[Example], setting: PromptSetting,
                   shots: Sequence[Sequence[Example]]) -> list[str]:
    """Each item's prompt: system prompt, its shots as earlier turns, then the item."""
    system = task.settings.system_prompt if setting.system_prompt is None \
        else setting.system_prompt
    return [build_prompt(tokenizer, reworded(item, setting.instruction), system,
                         [reworded(s, setting.instruction) for s in item_shots])
            for item, item_shots in zip(items, shots)]
