"""Prompt formatting: the model's chat template when it has one, else the Alpaca template.
Few-shot examples (`shots`) come before the item as earlier turns: a user turn and the
assistant's reference answer each (with the Alpaca template, one answered block each)."""

from __future__ import annotations

from collections.abc import Sequence

from loop.core.records import Example

ALPACA = "### Instruction:\n{instruction}\n\n### Response:\n"
ALPACA_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
ALPACA_STOP = "### Instruction"


def user_message(example: Example) -> str:
    return f"{example.instruction}\n\n{example.input}" if example.input else example.instruction


def build_prompt(tokenizer, example: Example, system_prompt: str | None = None,
                 shots: Sequence[Example] = ()) -> str:
    """The text a model sees before its answer (the answer itself is appended for training)."""
    if getattr(tokenizer, "chat_template", None):
        messages = [turn for shot in shots for turn in (
            {"role": "user", "content": user_message(shot)},
            {"role": "assistant", "content": shot.output})]
        messages.append({"role": "user", "content": user_message(example)})
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(_alpaca(shot) + shot.output + "\n\n" for shot in shots) + _alpaca(example)


def _alpaca(example: Example) -> str:
    template = ALPACA_WITH_INPUT if example.input else ALPACA
    return template.format(instruction=example.instruction, input=example.input)


def stop_strings(tokenizer) -> list[str]:
    """Text that ends an answer besides the EOS token (the Alpaca template has no end marker)."""
    return [] if getattr(tokenizer, "chat_template", None) else [ALPACA_STOP]


def completion_text(tokenizer, example: Example) -> str:
    """The training target: the reference answer followed by the end-of-turn token."""
    return example.output + (tokenizer.eos_token or "")
