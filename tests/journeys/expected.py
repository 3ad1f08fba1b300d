"""What the README's journeys say, declared once: each marked block's commands, in order, as the suite
expects them (a regex per command), and what ``make serve`` serves.

Changing a README command means changing its row here (``test_structure.py`` checks the two agree in
seconds; ``test_readme.py`` runs them). When ``make serve`` serves another pipeline, change the Makefile,
the README's ``make-serve`` line and ``MAKE_SERVE`` below; the make-serve journey reads only ``MAKE_SERVE``.
"""

from __future__ import annotations

from dataclasses import dataclass

TWO_TOWER = "ml100k-two_tower-seed42"
RANKER = "ml100k-dlrm-seed42"
BPR = "ml100k-bpr-seed42"
REFRESHED = "ml100k-refresh-two_tower-seed42"

# block -> [(key the journey takes it by, regex the README command must match)], in README order
JOURNEYS: dict[str, list[tuple[str, str]]] = {
    "quickstart": [
        ("make run", r"^make run$"),
        ("make test", r"^make test$"),
    ],
    "train-serve": [
        ("activate", r"^\. \.venv/bin/activate$"),
        ("prepare", r"^python -m recsys\.data\.prepare data=ml100k$"),
        ("train", r"^python -m recsys\.train experiment=ml100k/two_tower$"),
        ("index", rf"^python -m recsys\.index run=outputs/train/{TWO_TOWER} index=ivf_flat$"),
        ("recommend", r"^python -m recsys\.recommend pipeline=two_tower user_id=196 k=10 show_trace=true$"),
        ("serve", r"^python -m recsys\.serve pipeline=two_tower$"),
    ],
    "make-serve": [
        ("make serve", r"^make serve$"),
    ],
    "ranker": [
        ("train", r"^python -m recsys\.train experiment=ml100k/dlrm$"),
        ("recommend", r"^python -m recsys\.recommend pipeline=two_tower_dlrm user_id=196$"),
        ("serve", r"^python -m recsys\.serve pipeline=two_tower_dlrm$"),
    ],
    "client": [
        ("health", r"^curl -s localhost:8000/health$"),
        ("recommend k=5", r"^curl -s localhost:8000/recommend .*\"k\":5"),
        ("read RID ITEM", r"^read RID ITEM < <\(curl -s localhost:8000/recommend "),
        ("feedback", r"^curl -s localhost:8000/feedback .*\$RID.*\$ITEM"),
        ("conversation", r"^curl -s localhost:8000/conversation "),
        ("similar", r"^curl -s 'localhost:8000/items/1/similar\?k=5'$"),
    ],
    "refresh": [
        ("refresh + retrain", r'^python -m recsys\.serve\.refresh --dataset-dir data/ml100k '
                              r'--feedback-db outputs/serve/ml100k/feedback\.sqlite --out-dir data/ml100k-refresh '
                              r'--retrain "python -m recsys\.train experiment=ml100k/two_tower data=refreshed"$'),
        ("index", rf"^python -m recsys\.index run=outputs/train/{REFRESHED} index=ivf_flat$"),
        ("serve", r"^python -m recsys\.serve pipeline=two_tower data_name=ml100k-refresh$"),
    ],
    "runs": [
        ("baseline", r"^python -m recsys\.train experiment=ml100k/bpr$"),
        ("changed", r"^python -m recsys\.train experiment=ml100k/bpr model\.module\.optimizer\.lr=0\.05$"),
        ("changed again", r"^python -m recsys\.train experiment=ml100k/bpr model\.module\.optimizer\.lr=0\.05$"),
        ("debug", r"^python -m recsys\.train experiment=ml100k/bpr debug=fast$"),
        ("sweep", r"^python -m recsys\.train -m hparams_search=bpr_optuna experiment=ml100k/bpr$"),
        ("baselines", r"^python scripts/run_baselines\.py$"),
    ],
}


@dataclass(frozen=True)
class Served:
    """What ``make serve`` does after ``make run``: the runs it reuses (in the order it prints them), the
    run it indexes, the pipeline it serves, and what /health must list for it."""

    reused: tuple[str, ...]
    indexed: str
    pipeline: str
    sources: tuple[str, ...]   # /health "sources" must include these
    first_stage: str | None    # /health "stages"[0], when the pipeline has a trained stage in front


SEQ_TWO_TOWER = "ml100k-two_tower_seq-seed42"
MAKE_SERVE = Served(reused=(), indexed=SEQ_TWO_TOWER, pipeline="seq_ranked", sources=("two_tower",),
                    first_stage="ranker")
