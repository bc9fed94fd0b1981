"""Answer losses with a shared prefix equal a plain full-sequence loss, row by row."""

import torch
import torch.nn.functional as F

from loop.models.answer_loss import answer_losses
from loop.models.loading import load_model
from loop.core.prompts import IGNORE, tokenize_examples
from loop.core.records import Example

INSTRUCTION = ("Classify the message. Possible labels: billing, shipping, returns, account, "
               "other. Reply with the label only, in lower case, and nothing else at all.")


def _examples():
    inputs = ["where is my parcel", "refund please", "I forgot my password", "hi", "ok thanks",
              "the invoice is wrong and I was charged twice for one order"]
    outputs = ["shipping", "returns", "account", "other", "other", "billing"]
    return [Example(f"e{i}", INSTRUCTION, out, inp) for i, (inp, out) in
            enumerate(zip(inputs, outputs))] + [Example("x", "Say hello.", "hello")]


def _plain_losses(lm, examples):
    rows, _ = tokenize_examples(lm.tokenizer, examples, None, 1 << 30)
    out = []
    with torch.inference_mode():
        for row in rows:
            ids = torch.tensor([row["input_ids"]])
            logits = lm.model(input_ids=ids).logits[0, :-1].float()
            labels = torch.tensor(row["labels"][1:])
            keep = labels != IGNORE
            out.append(F.cross_entropy(logits[keep], labels[keep]).item())
    return out


def test_prefix_cached_losses_equal_plain_losses():
    lm = load_model("tiny-random")
    examples = _examples()
    expected = _plain_losses(lm, examples)
    for batch_size in (1, 4, 16):
        got = answer_losses(lm, examples, batch_size=batch_size)
        assert len(got) == len(examples)
        for g, e in zip(got, expected):
            assert abs(g - e) < 1e-4, (batch_size, got, expected)
