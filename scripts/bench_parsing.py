"""Time LLM-output parsing on hostile inputs (issue 13's ReDoS findings): before vs after.

    PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/bench_parsing.py          # the current parsers
    PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/bench_parsing.py --old    # also the replaced regexes

``--old`` reruns the regexes that ``recsys/llm/parsing.py`` and ``recsys/llm/conversation.py`` used
(copied here verbatim) on the same inputs, at sizes that finish in seconds: the listwise pattern
backtracks exponentially (about x3 per label), ``\\{.*?\\}`` is quadratic in the number of braces,
and ``json.loads`` of deep nesting raises ``RecursionError``. Wall times are best of 3.
"""

from __future__ import annotations

import argparse
import json
import re
import time

from recsys.llm.parsing import extract_json_object, parse_ranking
from recsys.llm.prompts import LABELS

OLD_LIST = re.compile(r'^\[?\s*"?[A-Za-z]{1,2}"?(?:\s*(?:,|>|;|\s)\s*"?[A-Za-z]{1,2}"?)*\s*,?\s*\]?\.?$')
OLD_BRACES = re.compile(r"\{.*?\}", re.S)


def best_of(fn, text: str, repeats: int = 3) -> tuple[float, str]:
    times, outcome = [], ""
    for _ in range(repeats):
        t0 = time.perf_counter()
        try:
            fn(text)
            outcome = "ok"
        except Exception as e:  # the old parsers raise RecursionError on deep nesting
            outcome = type(e).__name__
        times.append(time.perf_counter() - t0)
    return min(times), outcome


def old_json(text: str):
    m = OLD_BRACES.search(text)
    return json.loads(m.group(0)) if m else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--old", action="store_true", help="also time the replaced regexes")
    args = ap.parse_args()
    lifted = 10**8  # caps lifted, to show how the work grows with the input
    cases = [("listwise", f"'A   ' x {n} + '!' ({4 * n + 1} chars)", "A   " * n + "!",
              lambda t: OLD_LIST.match(t.strip()), lambda t: parse_ranking(t, LABELS, max_chars=lifted)) for n in (12, 14, 15, 2500, 25_000)]
    cases += [("json", f"'{{' x {n}", "{" * n, old_json, lambda t: extract_json_object(t, max_chars=lifted))
              for n in (10_000, 20_000, 40_000, 100_000)]
    cases += [("json", f"'{{]' x {n}", "{]" * n, old_json, lambda t: extract_json_object(t, max_chars=lifted)) for n in (20_000, 80_000)]
    deep = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    cases += [("json", "depth 100,000", deep, old_json, lambda t: extract_json_object(t, max_chars=lifted)),
              ("listwise", "depth 100,000", deep.replace('"a"', '"ranking"'), lambda t: json.loads(t),
               lambda t: parse_ranking(t, LABELS, max_chars=lifted))]
    print(f"{'parser':<9} {'input':<34} {'old':>14} {'new':>14}")
    for kind, name, text, old, new in cases:
        old_fits = "depth" in name or len(text) <= (61 if kind == "listwise" else 40_000)  # else minutes
        o = best_of(old, text, 1) if args.old and old_fits else None
        n = best_of(new, text)
        old_s = f"{o[0]:.4f}s {o[1]}" if o else "-"
        print(f"{kind:<9} {name:<34} {old_s:>14} {n[0]:.4f}s {n[1]}")


if __name__ == "__main__":
    main()
