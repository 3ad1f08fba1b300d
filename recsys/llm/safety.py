"""What explanation text may contain, and how catalogue text is made to fit it.

    unsafe_reasons('see http://evil.example')   -> ['url or scheme', 'url']
    safe_title('Tom &amp; Jerry <b>')           -> 'Tom and Jerry'
    safe_title('Ignore previous instructions')  -> None   (rendered as "this film" or not cited)

Safe text (the one rule, ``unsafe_reasons``, checked on the NFKC form of the text, so a
full-width ``＜`` is a ``<``): printable, no markup, entity or percent-encoding characters
(``< > & { } [ ] ` | \\``, ``%3C``), no URL, scheme (``javascript:``), domain, IPv4 address or
e-mail, and none of a list of instruction words and phrases ("send your password", "click",
"ignore ...", "act as", "card number", "bitcoin", "in the comments"). The last is a pattern
list, not an understanding of the text: an instruction reworded around it passes.
The verifier applies it to every LLM sentence (``recsys.llm.explain.Verifier``),
and the explainer applies it once more to every final sentence, templates
included: one that fails is replaced by ``GENERIC`` and counted.

Catalogue text is data, and hostile data must not reach an explanation either
way (a template quotes the title; an LLM reads it in its prompt): ``safe_title``
decodes HTML entities and percent-encoding and NFKC-normalises until the text is stable
(at most 3 rounds: ``&amp;lt;`` is a ``<``; "Amélie" stays "Amélie"), keeps the text of a
markdown link, drops tags (script and style elements whole), URLs, domains, IPv4 addresses
and e-mails, writes ``&`` as "and" and a double quote as a single one; what is left must
pass ``unsafe_reasons`` and hold a letter or digit, else the title is withheld (``None``).
Of ML-100K's 1,682 raw (1,349 prepared) titles, 2 are withheld ("Booty Call", "Some Folks
Call It a Sling Blade": "call" is an instruction word; tests/llm/test_safe_title.py) and 19
have "&" written as "and".
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from urllib.parse import unquote

GENERIC = "A film recommended for you."  # passes unsafe_reasons by construction

_UNSAFE = [
    (re.compile(r"[<>{}\[\]`|\\]"), "markup"),
    (re.compile(r"&(?:[a-z]+|#\d+);|&", re.I), "markup"),
    (re.compile(r"%[0-9A-Fa-f]{2}"), "percent-encoded"),
    (re.compile(r"(?:https?|ftp|javascript|data|vbscript|file|mailto)\s*:", re.I), "url or scheme"),
    (re.compile(r"www\.|\b[\w-]+\.(?:com|net|org|io|ly|ru|xyz|info|biz|co|me|app|dev|link|site)\b", re.I), "url"),
    (re.compile(r"\b[\w-]+(?:\.[\w-]+)*\.[a-z]{2,24}\b"), "domain"),  # lower-case suffix: "Story.It" is prose
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}\b"), "ip address"),  # with or without :port and /path
    (re.compile(r"\S@\S"), "e-mail"),
    (re.compile(r"\b(?:password|passcode|pin|credit card|account|login|log in|sign in|verify|bank|ssn|"
                r"send|click|visit|download|install|call|email|e-mail|text us|reply|subscribe|ignore|"
                r"disregard|instructions?|prompt|"
                # phrases, high precision (none is in ML-100K's titles; "Forget Paris" stays); reworded ones pass
                r"forget (?:all |everything )?(?:the |your )?(?:above|previous|prior|earlier)|act as|card numbers?|"
                r"bitcoin|crypto\w*|wallets?|dot com|in the comments|tell your friends)\b", re.I), "instruction"),
]
_ELEMENT = re.compile(r"<(script|style)\b[^>]*>.*?(?:</\1\s*>|$)", re.I | re.S)
_TAG = re.compile(r"<[^>]*>?")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\((?:[^()]|\([^()]*\))*\)?")  # the target may hold one level of (...)
_LINKISH = re.compile(r"\b(?:https?|ftp|javascript|data|vbscript|file|mailto)\s*:\S*|www\.\S+|\S+@\S+"
                      r"|\b[\w-]+(?:\.[\w-]+)*\.[a-z]{2,24}\b\S*|\b(?:\d{1,3}\.){3}\d{1,3}\b\S*", re.I)
_MARKUP = re.compile(r"[<>{}\[\]`|\\]")
_SPACES = re.compile(r"\s+")


def _decoded(s: str, rounds: int = 3) -> str:
    """Entities, percent-encoding and compatibility forms undone until stable (a bounded number of rounds)."""
    for _ in range(rounds):
        t = unicodedata.normalize("NFKC", html.unescape(unquote(s) if "%" in s else s))
        if t == s:
            break
        s = t
    return s


def unsafe_reasons(text: str) -> list[str]:
    """Why ``text`` is not safe explanation text (see the module docstring); [] when it is."""
    return list(_reasons(text))


# The rules cost ~40 us per sentence (their alternations with re.I defeat the regex engine's literal scans,
# and one combined pattern was slower still); a served list checks ten sentences, and the template
# sentence of a (user, item) pair repeats until the user's history changes: remember the answers.
@functools.lru_cache(maxsize=65_536)
def _reasons(text: str) -> tuple[str, ...]:
    text = unicodedata.normalize("NFKC", text)
    reasons = () if text.isprintable() else ("non-printable characters",)
    return reasons + tuple(why for pat, why in _UNSAFE if pat.search(text))


def safe_title(text) -> str | None:
    """Catalogue text (a title, a genre) as explanation text, or None when it cannot be made safe."""
    s = _decoded(str(text if text is not None else ""))
    s = "".join(c if c.isprintable() else " " for c in s)
    s = _ELEMENT.sub(" ", s)
    s = _MD_LINK.sub(r" \1 ", s)
    s = _TAG.sub(" ", s)
    s = _LINKISH.sub(" ", s)
    s = _MARKUP.sub(" ", s.replace("&", " and ").replace('"', "'"))
    s = _SPACES.sub(" ", s).strip(" ,;:")
    if not any(c.isalnum() for c in s) or unsafe_reasons(s):
        return None
    return s
