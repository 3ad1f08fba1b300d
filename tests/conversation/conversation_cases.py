"""The conversation set (cases.yaml) and how its tests compose the serve config (shared by this folder's tests)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CASES = yaml.safe_load((Path(__file__).parent / "cases.yaml").read_text())


def compose_serve(data_dir, feedback_db, overrides=()):
    from recsys.pipeline.build import compose_serve as compose

    return compose(["pipeline=untrained", f"paths.data_dir={data_dir}", "data_name=ml100k", f"feedback_db={feedback_db}",
                    "pipeline.sources.content=null", *overrides])
