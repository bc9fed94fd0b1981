"""Prompt formatting: the model's chat template when it has one, else the Alpaca template.
Few-shot examples (`shots`) come before the item as earlier turns: a user turn and the
assistant's reference answer each (with the Alpaca template, one answered block each). A task's
instruction is said once: a turn whose instruction is the one before it carries only its input,
so the instruction is a prefix every item shares, nearest shots too. Measured on clinc_intents
(150 labels in the instruction, 40 test items, bench/prompt_baseline.py; README):
repeated in every turn, 8 shots made 6,200-token prompts; said once first, 4- and 8-shot nearest
pass 62.5% and 72.5% at 1.7 and 0.9 items/s, but 1-shot nearest 7.5% (45% when repeated); said
first and again in the item's turn, 1-shot nearest 45% and 4-shot 55% at 0.2 items/s (the second
copy follows the varying shot, so nobody shares it); in the item's turn only, 25% and 35%.

Data text never becomes a control token: a row that contains a tokenizer's special or added
token as text (`<|im_end|>`, `<|im_start|>`, `<|endoftext|>`...) would otherwise close the user
turn and forge system or assistant turns. `plain_text` breaks every such string with a
zero-width space after its first character, so every tokenizer call (generation, vLLM, training,
trl's DPO) encodes it as ordinary text; rows without control strings are left byte for byte as
they were, so their prompts, prediction ids and outputs do not change.

`tokenize_examples` turns examples into the token rows training and answer losses share:
prompt + answer (+ end-of-turn), prompt labels masked with IGNORE.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Sequence

from loop.core.records import Example

IGNORE = -100  # label of tokens that carry no loss (prompt tokens)
# Rows sharing at least this many leading tokens run them once per packed chunk
# (loop/train/packing.py; the cycle's time estimate counts the same way). A shorter common prefix
# (e.g. only a chat template's header) saves few tokens per row; the same for every task, not tuned.
MIN_SHARED_PREFIX = 32
BREAK = "\u200b"  # zero-width space: splits a control-token string into plain text
_PATTERNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # tokenizer -> regex | None


def control_tokens(tokenizer) -> list[str]:
    """The strings a tokenizer turns into single added tokens whatever surrounds them: its
    special tokens and added tokens that are not plain words (longest first)."""
    added = getattr(tokenizer, "added_tokens_decoder", None) or {}
    names = {str(getattr(t, "content", t)) for t in added.values()}
    names |= set(getattr(tokenizer, "all_special_tokens", None) or [])
    return sorted((n for n in names if len(n) > 1 and not n.strip().isalnum()),
                  key=lambda n: (-len(n), n))


def _pattern(tokenizer) -> re.Pattern | None:
    try:
        if tokenizer in _PATTERNS:
            return _PATTERNS[tokenizer]
    except TypeError:  # not weak-referenceable: compute each time
        return _compile(tokenizer)
    _PATTERNS[tokenizer] = pattern = _compile(tokenizer)
    return pattern


def _compile(tokenizer) -> re.Pattern | None:
    names = control_tokens(tokenizer)
    return re.compile("|".join(map(re.escape, names))) if names else None


def plain_text(tokenizer, text: str) -> str:
    """`text` with every control-token string broken (see the module docstring); unchanged
    when it holds none. Repeated until none is left (a token may be part of another)."""
    pattern = _pattern(tokenizer)
    while pattern is not None and pattern.search(text):
        text = pattern.sub(lambda m: m.group()[0] + BREAK + m.group()[1:], text)
    return text

ALPACA = "### Instruction:\n{instruction}\n\n### Response:\n"
ALPACA_WITH_INPUT = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
ALPACA_INPUT_ONLY = "### Input:\n{input}\n\n### Response:\n"  # a later shot of one instruction
ALPACA_STOP = "### Instruction"
ALPACA_INPUT_STOP = "### Input:"  # the next input-only block


def user_message(example: Example) -> str:
    return f"{example.instruction}\n\n{example.input}" if example.input else example.instruction


def build_prompt(tokenizer, example: Example, system_prompt: str | None = None,
                 shots: Sequence[Example] = ()) -> str:
    """The text a model sees before its answer (the answer itself is appended for training).
    Only the template contributes control tokens: the data (shots too) goes in through
    `plain_text`."""
    def plain(text: str) -> str:
        return plain_text(tokenizer, text)

    turns = [*shots, example]
    said = [i > 0 and bool(e.input) and e.instruction == turns[i - 1].instruction
            for i, e in enumerate(turns)]  # the instruction is already in the turn before
    if getattr(tokenizer, "chat_template", None):
        messages = [turn for shot, known in zip(shots, said) for turn in (
            {"role": "user", "content": plain(shot.input if known else user_message(shot))},
            {"role": "assistant", "content": plain(shot.output)})]
        messages.append({"role": "user", "content": plain(example.input if said[-1]
                                                          else user_message(example))})
        if system_prompt:
            messages.insert(0, {"role": "system", "content": plain(system_prompt)})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(_alpaca(plain, shot, known) + plain(shot.output) + "\n\n"
                   for shot, known in zip(shots, said)) + _alpaca(plain, example, said[-1])


def _alpaca(plain, example: Example, input_only: bool = False) -> str:
    if input_only:
        return ALPACA_INPUT_ONLY.format(input=plain(example.input))
    template = ALPACA_WITH_INPUT if example.input else ALPACA
    return template.format(instruction=plain(example.instruction), input=plain(example.input))


def stop_strings(tokenizer) -> list[str]:
    """Text that ends an answer besides the EOS token (the Alpaca template has no end marker)."""
    return [] if getattr(tokenizer, "chat_template", None) else [ALPACA_STOP, ALPACA_INPUT_STOP]


def completion_text(tokenizer, example: Example) -> str:
    """The training target: the reference answer (as plain text) followed by the end-of-turn
    token, the only control token in it."""
    return plain_text(tokenizer, example.output) + (tokenizer.eos_token or "")


def tokenize_examples(tokenizer, examples: Sequence[Example], system_prompt: str | None,
                      max_seq_len: int) -> tuple[list[dict], list[str]]:
    """Rows {input_ids, labels} with prompt labels masked; returns (rows, ids skipped as too long).

    Prompt and completion are tokenized separately (no special tokens added), exactly as
    loop.models.decode sees the prompt and as the model emits the answer after it, so training and
    inference agree token for token. An example longer than `max_seq_len` is skipped rather than
    truncated: cutting it would drop the answer or train on a prompt the model never sees.
    """
    rows, skipped = [], []
    for example in examples:
        prompt = tokenizer(build_prompt(tokenizer, example, system_prompt),
                           add_special_tokens=False)["input_ids"]
        answer = tokenizer(completion_text(tokenizer, example),
                           add_special_tokens=False)["input_ids"]
        if len(prompt) + len(answer) > max_seq_len or not answer:
            skipped.append(example.id)
            continue
        rows.append({"input_ids": prompt + answer, "labels": [IGNORE] * len(prompt) + answer})
    return rows, skipped
