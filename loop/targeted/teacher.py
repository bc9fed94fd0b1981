"""Teachers: a stronger model that writes new training pairs from failure examples.

    teacher = make_teacher(TeacherConfig(model="Qwen/Qwen2.5-7B-Instruct",
                                         base_url="http://localhost:8000/v1",
                                         api_key_env="TEACHER_API_KEY"))
    texts = teacher.complete([teacher_prompt(failure_view, k=3)], seeds=[0])
    pairs = parse_pairs(texts[0])

Two kinds: a local model (any name `loop.models.load_model` accepts) and an OpenAI-compatible
chat-completions endpoint (`loop.core.endpoint`: retries with backoff, `concurrency` requests in
flight). The API key is read from the environment variable *named* in the config (else
$OPENAI_API_KEY) at call time; it is never stored, logged or put in an error message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from loop.core.endpoint import ChatRequest, Endpoint, complete_all
from loop.core.errors import ConfigError
from loop.core.settings import TeacherSettings as TeacherConfig  # [targeted.teacher]

SYSTEM = ("You write training data for a small language model. You answer with JSON only, "
          "and every answer you give is correct.")


@dataclass(frozen=True)
class FailureView:
    """What the teacher is shown about one failure."""

    instruction: str
    input: str
    reference: str
    model_output: str
    categories: tuple[str, ...]


class Teacher(Protocol):
    name: str

    def complete(self, prompts: list[str], seeds: list[int]) -> list[str]: ...


def teacher_prompt(view: FailureView, k: int, variation: int = 0) -> str:
    """A self-instruct prompt: the failing item, its reference, what went wrong, the format."""
    parts = [
        "A small model failed on this item.",
        f"Instruction: {view.instruction}",
        f"Input: {view.input or '(none)'}",
        f"Correct answer: {view.reference}",
        f"The model answered: {view.model_output or '(nothing)'}",
        f"Failure type: {', '.join(view.categories) or 'wrong answer'}",
        "",
        (f"Write {k} new items that practise the same skill, with different content (never "
         "copy the item above). Each answer must be correct and follow exactly the format of "
         "the correct answer above."),
        ('Reply with only a JSON list of objects with the keys "instruction", "input" (may '
         'be "") and "output".'),
    ]
    if variation:
        parts.append(f"(Set {variation + 1}: choose content different from earlier sets.)")
    return "\n".join(parts)


def parse_pairs(text: str) -> list[dict[str, str]]:
    """The instruction/input/output objects in a teacher answer: a JSON list, or JSON objects
    anywhere in the text (models wrap JSON in prose or code fences). Invalid entries are dropped."""
    decoder = json.JSONDecoder()
    found: list[object] = []
    pos = 0
    while pos < len(text):
        start = min((i for i in (text.find("[", pos), text.find("{", pos)) if i >= 0), default=-1)
        if start < 0:
            break
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            pos = start + 1
            continue
        found.extend(value if isinstance(value, list) else [value])
        pos = end
    return [pair for pair in map(_pair, found) if pair]


def _pair(value: object) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    instruction, output = value.get("instruction"), value.get("output")
    if not isinstance(instruction, str) or not instruction.strip() or output is None:
        return None
    if isinstance(output, (dict, list)):  # a JSON answer written as JSON, not as a string
        output = json.dumps(output, ensure_ascii=False)
    input_text = value.get("input") or ""
    if not isinstance(output, (str, int, float)) or not isinstance(input_text, str):
        return None
    return {"instruction": instruction.strip(), "input": input_text.strip(),
            "output": str(output).strip()}


class LocalTeacher:
    """Any model `load_model` accepts; greedy, through the model's chat template."""

    def __init__(self, config: TeacherConfig, batch_size: int = 4):
        self.config, self.batch_size, self.name = config, batch_size, config.model
        self._lm = None

    def complete(self, prompts: list[str], seeds: list[int]) -> list[str]:
        from loop.models.decode import generate
        from loop.models.loading import load_model
        from loop.core.prompts import build_prompt
        from loop.core.records import Example

        del seeds  # greedy decoding: the prompt's variation line gives new content, not a seed
        if self._lm is None:
            self._lm = load_model(self.config.model)
        texts = [build_prompt(self._lm.tokenizer, Example("", p, ""), SYSTEM) for p in prompts]
        outs = generate(self._lm, texts, self.config.max_new_tokens, self.batch_size,
                        progress=False)
        return [o.text for o in outs]


class EndpointTeacher:
    """An OpenAI-compatible `/chat/completions` endpoint."""

    def __init__(self, config: TeacherConfig):
        self.config, self.name = config, config.display
        self.endpoint = Endpoint(config.base_url, config.model, config.api_key_env,
                                 timeout_s=config.timeout_s, concurrency=config.concurrency,
                                 hint="check [targeted.teacher] base_url, model and api_key_env")

    def complete(self, prompts: list[str], seeds: list[int]) -> list[str]:
        c = self.config
        replies = complete_all(self.endpoint, [
            ChatRequest.user(p, SYSTEM, temperature=c.temperature, max_tokens=c.max_new_tokens,
                             seed=s) for p, s in zip(prompts, seeds)])
        for reply in replies:
            if reply.text is None:
                raise ConfigError(f"The teacher endpoint {self.endpoint.url} gave an answer "
                                  f"that is {reply.failure}; {self.endpoint.hint}.")
        return [r.text for r in replies]


def make_teacher(config: TeacherConfig) -> Teacher:
    return EndpointTeacher(config) if config.base_url else LocalTeacher(config)
