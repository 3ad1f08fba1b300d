"""Rule-based reading of an English request into ``Constraints`` fields (no model, microseconds).

What the rules understand (``tests/conversation/cases.yaml`` holds the cases):

- genres from the catalogue's vocabulary, plurals and mood words ("funny",
  "scary", "for kids"); several genres are AND ("a romantic comedy", "sci-fi
  for kids" -> ``require_categories``) unless joined by "or" ("a comedy or a
  drama" -> ``include_categories``) or by "and" between kinds of film ("I love
  westerns and war movies": either); two mood adjectives joined by "and" stay
  both ("funny and romantic"); negation scopes over "or"/comma lists
  ("anything but horror or war", "no musicals, westerns");
- years with their exact bounds: "before 1995" -> max 1994, "until 1995" ->
  max 1995, "after 1995" -> min 1996, "since 1995" / "1995 or later" -> min
  1995, "nothing before 1995" -> min 1995, "(from|in) 1995 (only)" -> exactly
  1995, "between 1970 and 1980" / "1970-1980" -> [1970, 1980], decades ("the
  90s", "1950s", "the fifties", "early/mid/late 80s"), "before/after the 80s";
- counts ("three thrillers", "top 5", "give me 4");
- titles as references after a cue ("like Fargo", "I loved Fargo", "similar
  to The Godfather"): ``like_titles``;
- quoted words ("about "space"", "no "zombie"");
- follow-up cues: "instead", "actually", "rather" replace the earlier genres;
  "also", "too", "as well" add to them (``mode``).
"""

from __future__ import annotations

import re

MOODS = {
    "light": ["Comedy"], "funny": ["Comedy"], "fun": ["Comedy"], "comedies": ["Comedy"], "comedy": ["Comedy"],
    "hilarious": ["Comedy"], "scary": ["Horror"], "horror": ["Horror"], "horrors": ["Horror"], "romantic": ["Romance"],
    "romance": ["Romance"], "romances": ["Romance"], "kids": ["Children's"], "children": ["Children's"],
    "family": ["Children's"], "child": ["Children's"], "animated": ["Animation"], "animation": ["Animation"],
    "cartoon": ["Animation"], "cartoons": ["Animation"], "thrilling": ["Thriller"], "thrillers": ["Thriller"],
    "suspense": ["Thriller"], "sci-fi": ["Sci-Fi"], "scifi": ["Sci-Fi"], "sci fi": ["Sci-Fi"],
    "science fiction": ["Sci-Fi"], "space": ["Sci-Fi"], "war": ["War"], "western": ["Western"],
    "westerns": ["Western"], "musical": ["Musical"], "musicals": ["Musical"], "documentary": ["Documentary"],
    "documentaries": ["Documentary"], "crime": ["Crime"], "mystery": ["Mystery"], "mysteries": ["Mystery"],
    "action": ["Action"], "adventure": ["Adventure"], "adventures": ["Adventure"], "drama": ["Drama"],
    "dramas": ["Drama"], "noir": ["Film-Noir"], "film noir": ["Film-Noir"], "fantasy": ["Fantasy"],
    "rom-com": ["Romance", "Comedy"], "romcom": ["Romance", "Comedy"], "rom-coms": ["Romance", "Comedy"],
}
# mood adjectives: "funny and romantic" asks for both at once (nouns joined by "and" ask for either)
ADJECTIVES = {"light", "funny", "fun", "hilarious", "scary", "romantic", "thrilling", "animated", "suspense"}
NUMWORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
            "ten": 10, "eleven": 11, "twelve": 12, "fifteen": 15, "twenty": 20, "a couple of": 2, "a few": 3}
DECADE_WORDS = {"twenties": 1920, "thirties": 1930, "forties": 1940, "fifties": 1950, "sixties": 1960,
                "seventies": 1970, "eighties": 1980, "nineties": 1990}
NEG = (r"(?:no|not|without|avoid|except|excluding|nothing|never|hate|don't want|dont want|skip|exclude|"
       r"anything but|anything except|other than|rather than|no more|not a|not an|none of|but not|sick of|tired of)")
REPLACE = re.compile(r"\b(instead|actually|rather|change (?:it )?to|switch to|make it|how about|what about)\b", re.I)
ADD = re.compile(r"\b(also|too|as well|plus|add|and some|with some|that is also|that's also)\b", re.I)
SEEN = r"(?:(?:i )?(?:have |'ve )?(?:already )?(?:seen|watched))"
CUES = r"(?:more like|something like|movies like|films like|like|similar to|loved|liked|enjoyed|love|in the vein of|such as|as good as)"
NOUNS = (r"(?:movies|movie|films|film|titles|picks|options|recommendations|suggestions|comedies|dramas|thrillers|"
         r"westerns|musicals|documentaries|cartoons|romances|mysteries|horrors|adventures|ones)")
_Y = r"(1[89]\d\d|20\d\d)"
# French / German / Spanish words -> the English the rules read (a glossary, applied before them, so that
# a 135M model's misses on non-English messages are caught; the LLM still reads those messages first)
GLOSSARY = [
    (r"\b(?:com[ée]dies? musicales?|musicals?|musicales?)\b", " musical "),
    (r"\b(?:com[ée]die|kom[öo]die|comedia|lustig|dr[ôo]le)\w*", " comedy "),
    (r"\b(?:horreur|horror|terror|[ée]pouvante)\w*", " horror "),
    (r"\b(?:drame|dramen|drama)\w*", " drama "),
    (r"\b(?:science[- ]fiction|ciencia[- ]ficci[óo]n|sci-fi)[\w-]*", " sci-fi "),
    (r"\b(?:guerre|kriegs?|guerra)\w*", " war "),
    (r"\b(?:policiers?|krimis?|polic[ií]ac\w*|crimen)\b", " crime "),
    (r"\b(?:romanti\w*|liebes\w*|rom[áa]ntic\w*)", " romance "),
    (r"\b(?:enfants?|kinder\w*|ni[ñn]os|familien?\w*|familiale)\b", " kids "),
    (r"\b(?:dessins? anim[ée]s?|zeichentrick\w*|animaci[óo]n|anim[ée])\b", " animated "),
    (r"\b(?:aventures?|abenteuer\w*|aventuras?)\b", " adventure "),
    (r"\b(?:documentaires?|dokumentar\w*|documental\w*)\b", " documentary "),
    (r"\b(?:myst[èe]res?|misterio)\b", " mystery "), (r"\b(?:fantastiques?|fantas[ií]a)\b", " fantasy "),
    (r"\b(?:acci[óo]n|actionfilm\w*)\b", " action "),
    (r"\b(?:ann[ée]es|a[ñn]os|jahre)\s+'?(\d0)\b", r" \1s "), (r"\blos\s+'?(\d0)s?\b", r" \1s "), (r"\b(\d0)(?:er|ern)\b(?:\s+jahren?)?", r" \1s "),
    (r"\b(?:sans|ohne|sin|pas d[e'])\s*", " without "), (r"\b(?:keine?n?|kein|aucun\w*|nicht)\b", " no "),
    (r"\b(?:avant|vor|antes de)\b", " before "), (r"\b(?:apr[èe]s|nach|despu[ée]s de)\b", " after "),
    (r"\b(?:depuis|seit|desde)\b", " since "), (r"\b(?:entre)\s+(\d{4})\s+(?:et|y)\s+(\d{4})", r" between \1 and \2 "),
    (r"\bzwischen\s+(\d{4})\s+und\s+(\d{4})", r" between \1 and \2 "),
    (r"\b(?:deux|zwei|dos)\b", " two "), (r"\b(?:trois|drei|tres)\b", " three "), (r"\b(?:quatre|vier|cuatro)\b", " four "),
    (r"\b(?:cinq|f[üu]nf|cinco)\b", " five "), (r"\b(?:films?|filme?n?|pel[íi]culas?)\b", " movies "),
    (r"\b(?:comme|wie|como)\b", " like "), (r"\b(?:ador[ée]|aim[ée]|geliebt|mochte|encant[óo])\b", " loved "),
]


def translate(message: str) -> str:
    """French/German/Spanish genre, decade, negation and year words -> English (see ``GLOSSARY``)."""
    s = message.lower()
    for pattern, repl in GLOSSARY:
        s = re.sub(pattern, repl, s)
    return s


def _decade(m_century: str | None, m_digit: str) -> int:
    """'19' + '9' -> 1990; None + '9' (the 90s) -> 1990; the 20s/00s/10s of ML's range -> 1920/2000/2010."""
    if m_century:
        return int(m_century + m_digit + "0")
    d = int(m_digit) * 10
    return 1900 + d if d >= 20 else 2000 + d


class RuleExtractor:
    """Deterministic message -> constraint fields over a genre vocabulary and a title list.

    Args:
        categories: the genre vocabulary (``meta.vocabularies["categories"]``).
        titles: ``{lower-cased core title: item_idx}`` for title references (optional).
    """

    def __init__(self, categories: list[str], titles: dict[str, int] | None = None) -> None:
        self.categories = list(categories)
        known = {c.lower(): c for c in self.categories}
        self.lookup: dict[str, list[str]] = {c.lower(): [c] for c in self.categories}
        for word, cats in MOODS.items():
            cs = [known[c.lower()] for c in cats if c.lower() in known]
            if len(cs) == len(cats):
                self.lookup.setdefault(word, cs)
        # a title that is also a genre word ("Kids", "War, The") is read as the genre
        self.titles = {t: i for t, i in (titles or {}).items() if t not in self.lookup and len(t) >= 2}
        self._title_re = None
        if self.titles:
            alts = "|".join(re.escape(t) for t in sorted(self.titles, key=len, reverse=True))
            self._title_re = re.compile(r"\s*(?:the |a |an )?(" + alts + r")(?![\w'-])", re.I)

    # -- pieces ----------------------------------------------------------------------
    def _titles(self, text: str) -> tuple[list[int], list[int], str]:
        """Catalogue titles right after a reference cue -> item_idx list, after a negation or "seen" ->
        excluded item_idx ("not Toy Story", "I have seen Liar Liar"); the titles are blanked out."""
        found: list[int] = []
        excluded: list[int] = []
        if self._title_re is None:
            return found, excluded, text
        cues = [(m, False) for m in re.finditer(r"\b" + CUES + r"\b", text)]
        cues += [(m, True) for m in re.finditer(r"\b(?:" + NEG + r"|" + SEEN + r")\b(?:\s+(?:the movie|the film))?", text)]
        for cue, negative in sorted(cues, key=lambda c: c[0].start()):
            m = self._title_re.match(text, cue.end())
            if m:
                (excluded if negative else found).append(self.titles[m.group(1).lower()])
                text = text[: m.start(1)] + " " * (m.end(1) - m.start(1)) + text[m.end(1):]
        return list(dict.fromkeys(found)), list(dict.fromkeys(excluded)), text

    def _genres(self, text: str, out: dict) -> str:
        mentions = []  # (start, end, genres)
        for word in sorted(self.lookup, key=len, reverse=True):  # longest first: "science fiction" before "fiction"
            for m in re.finditer(r"(?<![\w-])" + re.escape(word) + r"(?![\w-])", text):
                mentions.append((m.start(), m.end(), self.lookup[word], word))
                text = text[: m.start()] + "#" * (m.end() - m.start()) + text[m.end():]  # consume
        mentions.sort()
        negated, groups = [], []  # included mentions chained by "or" form one OR group
        prev_end, prev_neg, prev_inc, prev_word = 0, False, None, ""
        for start, end, cats, word in mentions:
            between = text[prev_end:start]
            clause = re.split(r"(?<!anything )(?<!all )\bbut\b(?!\s+not)|\band\b(?!\s+no)|\bwith\b|[;.!?]", text[max(0, start - 40):start])[-1]
            neg = re.search(r"\b" + NEG + r"\b[\w\s'#,-]*$", clause) is not None
            chained = prev_end > 0 and re.fullmatch(r"[\s,]*(?:or|nor|,)?[\s]*(?:an?\s+)?", between) is not None
            if chained and prev_neg and not re.search(r"\b(but|and)\b", between):
                neg = True  # "no horror or war", "anything but musicals, westerns"
            # "westerns and war movies": either (a list of kinds); "funny and romantic": both (two adjectives)
            anded = prev_end > 0 and re.fullmatch(r"[\s,]*(?:and|&)\s*(?:an?\s+)?", between) is not None \
                and not (prev_word in ADJECTIVES and word in ADJECTIVES)
            if neg:
                negated += cats
            elif (chained and re.search(r"\bor\b", between) or anded) and prev_inc is not None and not prev_neg:
                groups[prev_inc].extend(cats)
                groups[prev_inc].append("|")  # marks an OR group
            else:
                groups.append(list(cats))
                prev_inc = len(groups) - 1
            prev_end, prev_neg, prev_word = end, neg, word
        include, require = [], []
        for g in groups:
            cats = [c for c in g if c != "|"]
            (include if "|" in g else require).extend(c for c in cats if c not in include + require)
        if len(require) == 1 and not include:
            include, require = require, []
        out["include_categories"] = list(dict.fromkeys(include))
        out["require_categories"] = [c for c in dict.fromkeys(require) if c not in out["include_categories"]]
        out["exclude_categories"] = list(dict.fromkeys(negated))  # "a comedy, but no comedy": Constraints asks
        return text

    def _years(self, text: str, out: dict) -> None:
        dec = r"(?:the\s+)?(?:(early|mid|late)[\s-]+)?(?:'?(?:(19|20)(\d)0|(\d)0)'?s\b|(" + "|".join(DECADE_WORDS) + r"))"
        spans = []
        for m in re.finditer(dec, text):
            base = DECADE_WORDS[m.group(5)] if m.group(5) else _decade(m.group(2), m.group(3) or m.group(4))
            lo, hi = {"early": (0, 3), "mid": (4, 6), "late": (7, 9)}.get(m.group(1), (0, 9))
            spans.append((m.start(), base + lo, base + hi))
        neg_before = re.compile(r"\b(?:nothing|not|no \w+|none)\s+(?:\w+\s+)?$")
        if spans:
            first = spans[0]
            pre = text[max(0, first[0] - 30): first[0]]
            if re.search(r"\b(?:nothing|not|none|no \w+)\s+(?:\w+\s+)?(?:before|older than|earlier than|prior to)\s*$", pre):
                out["year_min"] = first[1]  # "nothing before the 90s"
            elif re.search(r"\b(before|older than|earlier than|prior to|pre)\s*$", pre):
                out["year_max"] = first[1] - 1
            elif re.search(r"\b(after|newer than|later than|post)\s*$", pre):
                out["year_min"] = first[2] + 1
            elif re.search(r"\b(since|from)\s*$", pre) and re.search(r"\b(on|onwards?|and later|or later|and up)\b", text[first[0]:]):
                out["year_min"] = first[1]
            else:
                out["year_min"], out["year_max"] = min(s[1] for s in spans), max(s[2] for s in spans)
            return
        if m := re.search(r"\bbetween " + _Y + r" and " + _Y + r"\b", text) or re.search(
                r"\b(?:from )?" + _Y + r"\s*(?:-|–|to|until|through|and)\s*" + _Y + r"\b", text):
            a, b = sorted((int(m.group(1)), int(m.group(2))))
            out["year_min"], out["year_max"] = a, b
            return
        for m in re.finditer(r"\b(before|earlier than|older than|prior to|pre-|until|up to|through|by|till)\s*" + _Y, text):
            pre = text[max(0, m.start() - 25): m.start()]
            y = int(m.group(2))
            inclusive = m.group(1) in ("until", "up to", "through", "by", "till")
            if neg_before.search(pre):  # "nothing before 1995": 1995 and later
                out["year_min"] = y + (1 if inclusive else 0)
            else:
                out["year_max"] = y if inclusive else y - 1
        for m in re.finditer(r"\b(after|newer than|later than|since|post-)\s*" + _Y, text):
            pre = text[max(0, m.start() - 25): m.start()]
            y = int(m.group(2))
            if neg_before.search(pre):  # "nothing after 1990": 1990 and earlier
                out["year_max"] = y if m.group(1) != "since" else y - 1
            else:
                out["year_min"] = y + (0 if m.group(1) == "since" else 1)
        if m := re.search(_Y + r"\s*(?:\+|or later|and later|or newer|and newer|onwards?|or after)", text):
            out["year_min"] = int(m.group(1))
        if m := re.search(_Y + r"\s*(?:or earlier|and earlier|or older|and older|or before)", text):
            out["year_max"] = int(m.group(1))
        if "year_min" not in out and "year_max" not in out:
            if m := re.search(r"\b(?:in|from|of|released in|only)\s+" + _Y + r"\b(?!s)", text) or re.search(
                    r"\b" + _Y + r"\s+(?:only|movies|films)\b", text):
                out["year_min"] = out["year_max"] = int(m.group(1))

    def _count(self, text: str, out: dict) -> None:
        words = "|".join(re.escape(w) for w in sorted(NUMWORDS, key=len, reverse=True))
        num = r"(\d{1,2}|" + words + r")"
        m = re.search(r"\b(?:top|give me|show me|recommend|suggest|list|just|only|make it)\s+" + num + r"\b(?!\s*(?:s\b|'s|\d))", text)
        m = m or re.search(r"\b" + num + r"\s+(?:[\w'#-]+\s+){0,2}?(?:" + NOUNS + r"\b|#{3,})", text)  # ### = a genre
        if m:
            n = m.group(1)
            if n != "one" or re.search(r"\bone\s+(?:[\w'#-]+\s+){0,2}?(?:movie|film)\b", text):
                out["max_results"] = int(n) if n.isdigit() else NUMWORDS[n]

    # -- the whole message -----------------------------------------------------------
    def extract(self, message: str) -> dict:
        """-> Constraints fields plus ``like_titles`` (item_idx), ``exclude_items`` (titles after a negation)
        and ``mode`` ("replace"/"add"), empty ones dropped, and ``rest``: the text no rule read."""
        out: dict = {"must_have_words": [], "exclude_words": []}
        for m in re.finditer(r"(" + NEG + r"\s+(?:\w+\s+)?)?[\"“]([^\"“”]{2,40})[\"”]", message, re.I):
            out["exclude_words" if m.group(1) else "must_have_words"].append(m.group(2).strip().lower())
        message = re.sub(r"[\"“][^\"“”]{2,40}[\"”]", " ", message)
        text = " " + message.lower().replace("’", "'").replace("‘", "'") + " "
        out["like_titles"], out["exclude_items"], text = self._titles(text)
        text = self._genres(text, out)
        self._years(text, out)
        self._count(text, out)
        if REPLACE.search(text):
            out["mode"] = "replace"
        elif ADD.search(text):
            out["mode"] = "add"
        out = {k: v for k, v in out.items() if v not in ([], None)}
        out["rest"] = re.sub(r"\b(?:" + NEG + r"|" + CUES + r"|" + SEEN + r")\b", " ", text)  # what nothing read
        return out
