"""What a message says beyond genres and years: positions in the last list, typos, age, drop answers, unknown words.

Each reader takes the message and returns what it found plus the message with
that part blanked, so the genre/year/count rules (``conversation_rules``) never
read "the 2nd" as a count or "30 years old" as a year. Rules (documented in
docs/conversation.md):

- positions: "the second one", "the 2nd", "number 2", "#2", "the last one"
  refer to the last list this session showed; "that one" / "this one" is its
  first item. After a negation or "seen"/"watched" ("not the first one", "I
  have seen the 2nd") the item is excluded, otherwise it is a reference ("more
  like the second one");
- typos: a word one edit (two for words of 9+ letters; a swap of neighbours is
  one edit) from exactly one genre word is read as that genre, and a phrase
  after a reference cue close to one catalogue title as that title, each with a
  note ("read 'comdey' as Comedy");
- age: "I am 30 years old", "I'm 30", "my age is 30", "age 30";
- answers to "Should I drop ... ?": "yes", "drop it", "ok drop the year(s)/genre(s)";
- unknown words: content words that nothing read are named in a note (or in the
  clarifying question), never silently dropped ("k-drama", "darker").
"""

from __future__ import annotations

import difflib
import re

from recsys.core.candidates import Constraints

ORDINALS = {"first": 1, "1st": 1, "second": 2, "2nd": 2, "third": 3, "3rd": 3, "fourth": 4, "4th": 4, "fifth": 5,
            "5th": 5, "sixth": 6, "6th": 6, "seventh": 7, "7th": 7, "eighth": 8, "8th": 8, "ninth": 9, "9th": 9,
            "tenth": 10, "10th": 10, "last": -1}
_ORD = "|".join(sorted(ORDINALS, key=len, reverse=True))
_NOUN = r"(?:one|movie|film|pick|title|item|suggestion)"
# "the 2nd" must end its phrase ("the last 10 years", "for the first time" are not references)
_END = r"(?=\s*(?:$|[,.;!?)]|(?:and|but|please|too|instead|either|from|with|then)\b))"
POSITION = re.compile(
    rf"(?:\bthe\s+({_ORD})(?:\s+{_NOUN}\b|{_END})|\b({_ORD})\s+{_NOUN}\b|(?:\bnumber|\bno\.|#)\s*(\d{{1,2}})\b"
    rf"|\b(?:that|this)\s+{_NOUN}\b)", re.I)
# a negation, or "seen"/"watched", earlier in the same clause makes a reference an exclusion
NEG_REF = re.compile(r"\b(?:no|not|without|except|exclude|excluding|remove|drop|skip|hide|never|seen|watched|"
                     r"other than|anything but|but not|none of)\b[^,;.!?]*$", re.I)
AGE = re.compile(r"\b(?:i am|i'm|im|my age is|age(?:d)?:?)\s+(\d{1,3})(?:\s*(?:years?(?:\s+old)?|yrs?(?:\s+old)?|y/?o))?"
                 r"(?=\s*(?:[,.;!?]|$|and\b|but\b|so\b|years|yrs|y/?o))", re.I)
DROP = re.compile(r"^\W*(?:(?:yes|yeah|yep|ok|okay|sure|please|fine)\b\W*)*(?:(?:drop|remove|lose|forget|ignore|skip)"
                  r"\s+(it|that|that part|the (years?|decade|dates?|genres?|words?|exclusions?|excluded \w+)))?\W*$", re.I)
# words of a request that say nothing by themselves (never named as unknown)
STOP = set("""
a about above after again all also am an and another any anything are as at be because been before being best
between both but by can could do does don't dont else even ever every film films for from funny genre genres get
give good great have having hello hey hi hmm how i i'd i'll i'm id if im in into is it its just kind kinds last
least let like liked likes love loved loves lot many me mid early late maybe mood more most movie movies much must
my need new nice no none not nothing now of off ok okay old older on one only or other our out over perhaps pick
picks please prefer quite rather really recent recommend recommendation recommendations right same see seen show
similar since so some something sort still such suggest surprise than thanks that the their them then there these
they thing things think this those through to today tonight too top type up us very want wanted watch watched
was we well were what whatever when which while who with without would yes you your years year decade decades
instead actually also plus add ones options titles suggestions enjoy enjoyed adore adored fan fans vein stuff
until till by through older newer earlier later prior post pre onwards onward exactly only around
exclude excluding except avoid hate sick tired drop remove ignore skip number first second third fourth fifth
last next previous again start over reset forget everything scratch change switch make about between
""".split())


def damerau1(a: str, b: str) -> int:
    """Optimal-string-alignment edit distance (insert, delete, substitute, swap of neighbours)."""
    d = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i in range(len(a) + 1):
        d[i][0] = i
    for j in range(len(b) + 1):
        d[0][j] = j
    for i in range(1, len(a) + 1):
        for j in range(1, len(b) + 1):
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
    return d[-1][-1]


def find_positions(message: str) -> tuple[list[tuple[int, bool]], str]:
    """-> ([(1-based position or -1 for the last, negative?)], message with the references blanked)."""
    refs, out = [], message
    for m in POSITION.finditer(message):
        word = m.group(1) or m.group(2)
        pos = ORDINALS[word.lower()] if word else int(m.group(3)) if m.group(3) else 1
        clause = message[max(0, m.start() - 40): m.start()]
        refs.append((pos, NEG_REF.search(clause) is not None))
        out = out[: m.start()] + " " * (m.end() - m.start()) + out[m.end():]
    return refs, out


def find_age(message: str) -> tuple[int | None, str]:
    """-> (the age the user states or None, message without it)."""
    m = AGE.search(message)
    if not m or not 0 < int(m.group(1)) < 120:
        return None, message
    return int(m.group(1)), message[: m.start()] + " " * (m.end() - m.start()) + message[m.end():]


def drop_answer(message: str) -> str | None:
    """An answer to "Should I drop ...?": None (not one), "pending" (drop what was asked about),
    "years", "genres", "words" or "exclusions"."""
    m = DROP.match(message)
    if not m or not re.search(r"\w", message):
        return None
    what = (m.group(2) or "").lower()
    for key, stems in (("years", ("year", "decade", "date")), ("genres", ("genre",)), ("words", ("word",)),
                       ("exclusions", ("exclu",))):
        if what.startswith(stems):
            return key
    return "pending"


# English words one edit from a genre word, never read as a typo of it
NEAR_WORDS = {"prime", "grime", "chime", "crimp", "eastern", "auction", "faction", "mastery", "comely", "musicale",
              "horrid", "dramas", "terror", "action", "actions", "romans", "western", "westerns"}


def correct_genre_typos(message: str, lookup: dict[str, list[str]], words: set[str] = frozenset()) -> tuple[str, list[str]]:
    """Words one edit from exactly one genre word (``RuleExtractor.lookup``) -> that word, with notes.
    ``words``: more real words never corrected (the catalogue titles' words)."""
    targets = [w for w in lookup if len(w) >= 5 and " " not in w]
    notes, out = [], message
    for m in reversed(list(re.finditer(r"(?<![\w-])[a-z][a-z'-]{4,}(?![\w-])", message.lower()))):
        w = m.group(0)
        if w in lookup or w in STOP or w in NEAR_WORDS or w in words:
            continue
        limit = 2 if len(w) >= 9 else 1
        close = {t for t in targets if abs(len(t) - len(w)) <= limit and damerau1(w, t) <= limit}
        genres = {tuple(lookup[t]) for t in close}
        if len(genres) == 1:
            best = min(close, key=lambda t: damerau1(w, t))
            out = out[: m.start()] + best + out[m.end():]
            notes.insert(0, f"read '{w}' as {', '.join(lookup[best])}")
    return out, notes


def correct_title_typos(message: str, titles: dict[str, int], display, cues: str) -> tuple[str, list[str]]:
    """A phrase of 1-5 words after a reference cue that is not a title but close to one -> that title."""
    if not titles:
        return message, []
    low, notes = message.lower(), []
    keys = list(titles)
    for cue in re.finditer(r"\b" + cues + r"\b", low):
        words = re.findall(r"[\w'&:.-]+", low[cue.end():])[:5]
        phrases = [" ".join(words[:n]) for n in range(len(words), 0, -1)]
        if any(p in titles or re.sub(r"^(the|a|an) ", "", p) in titles for p in phrases):
            continue
        for p in phrases:
            if len(p) < 5 or p in STOP:
                continue
            hit = difflib.get_close_matches(p, keys, n=1, cutoff=0.85)
            if hit:
                start = low.index(p, cue.end())
                message = message[:start] + hit[0] + message[start + len(p):]
                low = message.lower()
                notes.append(f"read '{p}' as {display(titles[hit[0]])}")
                break
    return message, notes


def unknown_words(text: str, known: set[str]) -> list[str]:
    """Content words of ``text`` (already stripped of what was read) that are not ``known`` nor request words."""
    out = []
    for w in re.findall(r"(?<![\w-])[a-z][a-z'-]{2,24}(?![\w-])", text.lower()):
        w = w.strip("'-")
        if w and w not in STOP and w not in known and w.removesuffix("s") not in known and w not in out:
            out.append(w)
    return out[:3]


def drop_part(c: Constraints, what: str) -> tuple[Constraints, str]:
    """Constraints without one part -> (constraints, a note saying what was dropped). ``what``: a
    ``recsys.pipeline.filters`` part key ("years", "include_categories", "require_categories:War", ...)
    or what the user named ("years", "genres", "words", "exclusions")."""
    key, _, name = what.partition(":")
    if key == "years":
        return c.model_copy(update={"year_min": None, "year_max": None}), "dropped the years"
    if key in ("genres", "include_categories") or (key == "require_categories" and not name):
        return c.model_copy(update={"include_categories": [], "require_categories": []}), "dropped the genres"
    if key == "require_categories":
        return c.model_copy(update={"require_categories": [g for g in c.require_categories if g != name]}), \
            f"dropped {name}"
    if key == "exclude_categories":
        return c.model_copy(update={"exclude_categories": []}), "dropped the excluded genres"
    if key in ("exclusions", "exclude_items"):
        return c.model_copy(update={"exclude_items": [], "exclude_categories": []}), "dropped the exclusions"
    if key in ("words", "must_have_words", "exclude_words"):
        return c.model_copy(update={"must_have_words": [], "exclude_words": []}), "dropped the words"
    return c, "nothing of the request can be dropped for that (see the question)"
