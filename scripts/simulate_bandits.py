"""Cumulative regret of Thompson sampling vs epsilon-greedy vs greedy on synthetic click models.

    .venv/bin/python scripts/simulate_bandits.py --seeds 10 --horizon 3000 \
        --out experiments/bandits.png --report experiments/bandits.md

Writes a PNG (mean cumulative regret with a +-1 std band, one panel per
setting) and a Markdown table (final regret mean +- std over seeds, and in
how many seeds Thompson sampling beat each baseline).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from recsys.pipeline.bandit_sim import POLICIES, SimConfig, simulate

SETTINGS = {
    "bernoulli, matched prior": dict(env="bernoulli", prior="matched"),
    "bernoulli, uniform prior": dict(env="bernoulli", prior="uniform"),
    "linear (contextual)": dict(env="linear", candidates=50, v=0.2),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--horizon", type=int, default=3000)
    ap.add_argument("--slots", type=int, default=2)
    ap.add_argument("--out", default="experiments/bandits.png")
    ap.add_argument("--report", default="experiments/bandits.md")
    args = ap.parse_args(argv)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, rows = {}, []
    t0 = time.time()
    for name, kw in tqdm(SETTINGS.items(), desc="settings"):
        cfg = SimConfig(horizon=args.horizon, slots=args.slots, **kw)
        res = simulate(cfg, range(args.seeds))
        results[name] = (cfg, res)
        ts = res["thompson"][:, -1]
        for p in POLICIES:
            final = res[p][:, -1]
            wins = "" if p == "thompson" else f"{int((ts < final).sum())}/{args.seeds}"
            rows.append(f"| {name} | {p} | {final.mean():.1f} ± {final.std():.1f} | {wins} |")

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4))
    for ax, (name, (cfg, res)) in zip(np.atleast_1d(axes), results.items()):
        t = np.arange(1, cfg.horizon + 1)
        for p in POLICIES:
            m, s = res[p].mean(0), res[p].std(0)
            ax.plot(t, m, label=p)
            ax.fill_between(t, m - s, m + s, alpha=0.2)
        ax.set_title(f"{name} ({args.seeds} seeds)")
        ax.set_xlabel("round")
        ax.set_ylabel("cumulative regret")
        ax.legend()
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)

    cmd = "OMP_NUM_THREADS=1 .venv/bin/python scripts/simulate_bandits.py " + " ".join(sys.argv[1:] if argv is None else argv)
    table = "\n".join(["| setting | policy | final cumulative regret (mean ± std) | seeds where TS is lower |",
                       "|---|---|---|---|", *rows])
    Path(args.report).write_text(REPORT.format(cmd=cmd, table=table, horizon=args.horizon, slots=args.slots,
                                               seeds=args.seeds, png=os.path.basename(args.out),
                                               secs=time.time() - t0))
    print(table)
    return 0


REPORT = """# Exploration: Thompson sampling vs epsilon-greedy vs greedy

Made by `{cmd}` ({secs:.0f} s on the 2-core CPU machine).
Code: `recsys/pipeline/exploration.py` (the bandits the pipeline stage uses),
`recsys/pipeline/bandit_sim.py` (click models, policies), this report's script.

Setup: horizon {horizon} rounds, a slate of {slots} slots per round, {seeds} seeds
(the world of a seed -- CTRs, users, candidate sets, click coins -- is the same for
every policy). Regret per round = sum of the {slots} best true click probabilities
minus those of the chosen items.

- *bernoulli*: 100 items, CTR p_i ~ Beta(1, 9). Every policy keeps the same
  Beta-Bernoulli posteriors; Thompson sampling ranks by a posterior draw, greedy by
  the posterior mean, epsilon-greedy (eps = 0.1) shows a random slate with
  probability eps. *matched prior*: the posteriors start at Beta(1, 9), the
  catalogue's real CTR distribution. *uniform prior*: they start at Beta(1, 1).
- *linear*: 100 items with 8-d embeddings, each round a random user and 50
  random candidates; click probability sigmoid(theta* . [u * e, e]); every
  policy uses the same Bayesian linear regression (`LinearTS`, v = 0.2).

{table}

![cumulative regret]({png})

Reading:
- With a matched prior, Thompson sampling has the lowest final regret on
  average. Greedy locks onto the first items that click; epsilon-greedy keeps
  paying for uniform exploration forever (its regret grows linearly).
- With a uniform Beta(1, 1) prior, "greedy" is no longer greedy: every unseen
  item looks like a 50% CTR, so it tries each item until its mean falls below
  the best one (optimism in the face of uncertainty) and it can beat Thompson
  sampling at this horizon. We report it rather than hide it; the pipeline's
  default prior is configurable (`prior_alpha`, `prior_beta` in
  `configs/pipeline/*.yaml`) and should be set to the observed CTR.
- In the contextual setting greedy is a strong baseline: the varying users and
  candidate sets explore for it (Bastani, Bayati & Khosravi, "Mostly
  Exploration-Free Algorithms for Contextual Bandits", 2021), so the gap to
  linear Thompson sampling is smaller and varies by seed; epsilon-greedy is
  clearly worst.
"""

if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    raise SystemExit(main())
