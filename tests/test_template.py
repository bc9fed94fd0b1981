"""The shared-template split: a fixed instruction drops out, what users wrote stays."""

from loop.core.template import Template

INSTRUCTION = ("Extract booking details from the user's message. Possible slots: city, date, "
               "time. Reply with a JSON object; reply {} if the message contains none.")
MESSAGES = ["Book me a car in Paris", "yes", "13", "I need it on March 4th at noon",
            "Sounds good", "pick up in New York tomorrow", "no thanks"]


def _texts():
    return [f"{INSTRUCTION}\n\nMessage: {m}" for m in MESSAGES]


def test_fixed_instruction_is_template_and_inputs_vary():
    template = Template.fit(_texts())
    for text, message in zip(_texts(), MESSAGES):
        varying = template.varying(text)
        assert message in varying
        assert "Possible slots" not in varying
    assert template.shared_share(_texts()[0]) > 0.7


def test_text_below_the_share_is_not_template():
    texts = _texts()[:2] + [f"Translate to French.\n\n{m}" for m in MESSAGES]
    template = Template.fit(texts)
    assert "Possible slots" in template.varying(texts[0])  # 2 of 9 texts: not shared by most


def test_all_template_text_is_kept_whole_and_fit_is_deterministic():
    texts = [INSTRUCTION] * 5
    assert Template.fit(texts).varying(INSTRUCTION) == INSTRUCTION.strip()
    a, b = Template.fit(_texts()), Template.fit(list(reversed(_texts())))
    assert [a.varying(t) for t in _texts()] == [b.varying(t) for t in _texts()]


def test_few_texts_have_no_template():
    assert Template.fit(_texts()[:2]).varying(_texts()[0]) == _texts()[0].strip()
