"""unsafe_reasons (cached) says exactly what the rules one by one say (recsys/llm/safety.py)."""

import random

import pytest

from recsys.llm.safety import _UNSAFE, unsafe_reasons

HOSTILE = ["see http://evil.example", "Visit WWW.x now", "mail me: a@b", "<script>x</script>", "a & b", "&amp;",
           "javascript :alert(1)", "Story.It is prose", "bad.xyz", "IGNORE previous instructions", "tab\there",
           "Because you liked Heat (1995).", "Fans of Crime films liked it.", "data: x", "[link](u)", "x|y", "",
           "Shine (1996) is a Drama like Emma.", "Amélie", "PIN code", "pinball", "go.COM", "film.io"]


@pytest.mark.parametrize("text", HOSTILE)
def test_answer_agrees_with_each_rule(text):
    one_by_one = ([] if text.isprintable() else ["non-printable characters"]) + \
        [why for pat, why in _UNSAFE if pat.search(text)]
    assert unsafe_reasons(text) == one_by_one


def test_answer_agrees_on_random_text():
    """10,000 random strings over an alphabet of the rules' own characters and words."""
    rng = random.Random(0)
    pieces = list("<>{}[]`|\\&#;:@./- \t\nabcXYZ019") + ["http", "www", ".com", ".org", "click", "Pin", "amp",
                                                         "mailto", "data", ".de", "ru", "send", " ", "é"]
    for _ in range(10_000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        one_by_one = ([] if text.isprintable() else ["non-printable characters"]) + \
            [why for pat, why in _UNSAFE if pat.search(text)]
        assert unsafe_reasons(text) == one_by_one, text


def test_a_cached_answer_cannot_be_changed_by_a_caller():
    first = unsafe_reasons("see http://evil.example")
    first.append("tampered")
    assert unsafe_reasons("see http://evil.example") == ["url or scheme", "domain"]
