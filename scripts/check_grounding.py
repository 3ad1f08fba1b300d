"""Independent judge of explanation grounding and safety (shares no code with recsys.llm.explain).

    python scripts/check_grounding.py experiments/explanations_smollm2.jsonl --dataset-dir data/ml100k

Reads the rows written by ``scripts/eval_explanations.py`` (facts, the LLM's sentence, whether the
verifier accepted it) and judges every sentence on its own terms:

- unsafe: markup or entity characters, a URL, a scheme, a domain, an e-mail, or words that ask the
  reader to do something with credentials or links;
- names a film that is neither the recommended item nor a liked one (any catalogue title of at
  least 4 characters, matched as whole words after dropping articles);
- a number that is not the year or the audience count given as facts;
- a claim: a content word (not in the stop-word list below, not one of the few words every
  recommendation needs) that does not occur in the facts.

``table_errors`` checks a template sentence's every stated fact against the parquet tables (the
property test in tests/llm/test_explain_tables.py runs it over many users).

Prints counts; exit status 1 when an accepted sentence is judged ungrounded (the target is 0).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path

# a standard English stop-word list (NLTK's, abridged to what matters here)
STOP = set("""i me my myself we our ours ourselves you your yours yourself yourselves he him his himself she her hers
herself it its itself they them their theirs themselves what which who whom this that these those am is are was were be
been being have has had having do does did doing a an the and but if or because as until while of at by for with about
against between into through during before after above below to from up down in out on off over under again further
then once here there when where why how all any both each few more most other some such no nor not only own same so
than too very s t can will just don should now may might would could also like""".split())
# what any recommendation sentence needs to say, facts aside
FRAME = set("""recommend recommended recommendation enjoy enjoyed liked love loved likes loves watch watched watching
film films movie movies user users fan fans people share shares shared genre genres similar popular found pick picked
well taste match matches fit fits kind one ones new""".split())
UNSAFE = [r"[<>{}\[\]`]", r"&", r"://", r"\b(?:javascript|data|vbscript)\s*:", r"www\.", r"\b\w+\.(?:com|net|org|io|xyz|ru|ly)\b",
          r"\w@\w", r"\b(?:password|credentials|login|log in|click|link|send|bank|urgent|verify|account)\b"]


def norm(title: str) -> str:
    t = re.sub(r"\s*\(\d{4}\)\s*$", "", str(title)).lower()
    t = re.sub(r",\s*(the|a|an|les|la|le|il|das|der|die|el)$", "", t).strip()
    return re.sub(r"^(the|a|an)\s+", "", t)


def tokens(text: str) -> list[str]:
    return [w.removesuffix("'s") for w in re.findall(r"[a-z0-9']+", text.lower())]


def judge(sentence: str, facts: dict, catalogue: list[str]) -> list[str]:
    """Problems of one sentence given its facts (empty = grounded and safe)."""
    problems = [f"unsafe {p!r}" for p in UNSAFE if re.search(p, sentence, re.I)]
    cited = [*facts.get("related_titles", []), *facts.get("asked_titles", [])]
    allowed_titles = [norm(t) for t in [facts["title"], *cited]]
    low = " " + re.sub(r"[^a-z0-9' ]", " ", sentence.lower()) + " "
    rest = low
    for t in sorted(allowed_titles, key=len, reverse=True):
        rest = rest.replace(" " + re.sub(r"[^a-z0-9' ]", " ", t) + " ", " ")
    for t in catalogue:
        tt = re.sub(r"[^a-z0-9' ]", " ", t)
        if len(t) >= 4 and re.search(r"(?<![a-z0-9'])" + re.escape(tt) + r"(?![a-z0-9'])", rest):
            problems.append(f"names film {t!r}")
    fact_words = set(tokens(" ".join([facts["title"], *cited, *facts.get("categories", []),
                                      *facts.get("shared_categories", []), facts.get("source") or "",
                                      "asked something" if facts.get("asked_titles") else ""])))
    numbers = {str(facts.get("year")), str(facts.get("popularity"))}
    year = int(facts.get("year") or 0)
    for d in re.findall(r"\b(1[89]\d0|20\d0)'?s\b", rest):  # a decade is grounded by a year inside it
        if not (int(d) <= year < int(d) + 10):
            problems.append(f"decade {d}s")
    rest = re.sub(r"\b(1[89]\d0|20\d0)'?s\b", " ", rest)
    for w in tokens(rest):
        if w.isdigit():
            if w not in numbers:
                problems.append(f"number {w}")
        elif w not in STOP and w not in FRAME and w not in fact_words and w.rstrip("s") not in fact_words \
                and not (w.endswith("ies") and w[:-3] + "y" in fact_words):
            problems.append(f"claim {w!r}")
    return problems


_CITED = re.compile(r'^(Recommended because you liked|You asked for something like) (.+), which (?:shares|share) '
                    r'([^"]+) with ("[^"]*"|this film)\.$')
_DESCRIBED = re.compile(r'^(.+) is an? (.+) film(?: from (\d{4}))?(?:, watched by (\d+) users?)?\.$')


def table_errors(sentence: str, item: int, items, liked: set[int], asked: set[int], popularity=None) -> list[str]:
    """Every fact a template sentence states, checked against the item table (one owner of this check).

    ``items``: the items table (``title``, ``year``, ``categories`` by item_idx); ``liked``: the user's
    liked items (history above the negative threshold); ``asked``: the session's reference items;
    ``popularity``: (N,) interaction counts. A cited film must be liked (or asked for, when the sentence
    says "asked for"), and every genre stated must be a genre of each cited film and of the item.
    """
    # explanations write "&" as "and" and '"' as "'" (recsys.llm.safety.safe_title)
    titles = [re.sub(r"\s+", " ", str(t).replace("&", " and ").replace('"', "'")).strip() for t in items["title"]]
    cats = [set(c) if c is not None else set() for c in items["categories"]]
    name = f'"{titles[item]}"'
    if m := _CITED.match(sentence):
        pool = asked if m.group(1).startswith("You asked") else liked
        genres = [g.strip() for g in m.group(3).split(",")]
        problems = [] if m.group(4) in (name, "this film") else [f"item named {m.group(4)!r}"]
        for t in re.findall(r'"([^"]+)"', m.group(2)):
            idx = [j for j in pool if titles[j] == t]
            if not idx:
                problems.append(f"{t!r} is not among the user's {'asked-for' if pool is asked else 'liked'} films")
            elif not any(set(genres) <= cats[j] for j in idx):
                problems.append(f"{t!r} lacks one of {genres}")
        return problems + [f"the item lacks {g!r}" for g in genres if g not in cats[item]]
    if m := _DESCRIBED.match(sentence):
        problems = [] if m.group(1) in (name, "This film") else [f"item named {m.group(1)!r}"]
        if set(g.strip() for g in m.group(2).split(",")) != cats[item]:
            problems.append(f"genres {m.group(2)!r} are not the item's {sorted(cats[item])}")
        if m.group(3) and int(m.group(3)) != int(items["year"].iloc[item]):
            problems.append(f"year {m.group(3)} is not {items['year'].iloc[item]}")
        if m.group(4) and popularity is not None and int(m.group(4)) != int(popularity[item]):
            problems.append(f"watched by {m.group(4)}, not {popularity[item]}")
        return problems
    return [f"not a template sentence: {sentence!r}"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rows")
    ap.add_argument("--dataset-dir", default="data/ml100k")
    ap.add_argument("--show", type=int, default=5, help="examples printed per group")
    args = ap.parse_args(argv)
    import pandas as pd

    catalogue = sorted({norm(t) for t in pd.read_parquet(Path(args.dataset_dir) / "items.parquet")["title"]})
    rows = [json.loads(line) for line in Path(args.rows).read_text().splitlines() if line.strip()]
    accepted = [r for r in rows if r["accepted"]]
    bad_raw = [(r, judge(r["text"], r["facts"], catalogue)) for r in rows]
    leaked = [(r, p) for r, p in bad_raw if r["accepted"] and p]
    emitted_bad = [(r, p) for r in rows if (p := judge(r["emitted"].replace("&amp;", "and"), r["facts"], catalogue))]
    summary = {
        "llm_sentences": len(rows), "accepted": len(accepted), "replaced": len(rows) - len(accepted),
        "judged_ungrounded_before_verifier": sum(bool(p) for _, p in bad_raw),
        "accepted_ungrounded": len(leaked),
        "accepted_ungrounded_rate": round(len(leaked) / max(len(accepted), 1), 4),
        "emitted_ungrounded": len(emitted_bad),
        "verifier_rejected_but_judged_grounded": sum(1 for r, p in bad_raw if not r["accepted"] and not p),
        # the verifier's own reasons for the replaced sentences, by kind (a sentence may have several)
        "verifier_reasons": dict(Counter(re.split(r"[:'\"(]|\d", x)[0].strip() for r in rows if not r["accepted"]
                                         for x in r.get("reasons", [])).most_common()),
    }
    print(json.dumps(summary, indent=1))
    for name, group in (("accepted but ungrounded", leaked), ("emitted but ungrounded", emitted_bad)):
        for r, p in group[: args.show]:
            print(f"{name}: {r['text']!r} -> {p}")
    for r in accepted[: args.show]:
        print(f"accepted: {r['text']!r}")
    return 1 if leaked or emitted_bad else 0


if __name__ == "__main__":
    sys.exit(main())
