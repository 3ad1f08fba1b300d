"""Pipeline composition: order, trace, switching stages off by one override, the real config on data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from recsys.core.candidates import Candidates, Constraints, UserContext
from recsys.pipeline.pipeline import Pipeline, build_pipeline
from recsys.retrieval.merge import CandidateMerger

from pipeline_helpers import ListSource

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "pipeline" / "default.yaml"


class Reverse:
    def __call__(self, ctx, cands):
        return cands.take(np.arange(len(cands))[::-1])


class DropFirst:
    def __call__(self, ctx, cands):
        return cands.take(np.arange(1, len(cands)))


def test_stages_run_in_order_and_trace_latency():
    p = Pipeline({"a": ListSource("a", [5, 6, 7, 8])}, CandidateMerger(), {"rev": Reverse(), "drop": DropFirst()}, k=2)
    out = p(UserContext(user_idx=0))
    assert out.items.tolist() == [7, 6]  # [5,6,7,8] -> [8,7,6,5] -> [7,6,5] -> head 2
    assert set(out.trace["latency_ms"]) == {"source/a", "merge", "rev", "drop", "total"}
    assert out.trace["counts"] == {"source/a": 4, "merge": 4, "rev": 4, "drop": 3}
    p2 = Pipeline({"a": ListSource("a", [5, 6, 7, 8])}, CandidateMerger(), {"rev": None, "drop": DropFirst()}, k=2)
    assert p2(UserContext(user_idx=0)).items.tolist() == [6, 7]  # a null stage is absent


def test_merger_records_every_source_and_max_results_caps_k():
    p = Pipeline({"a": ListSource("a", [1, 2, 3]), "b": ListSource("b", [3, 4])}, CandidateMerger(), {}, k=10)
    out = p(UserContext(user_idx=0))
    assert dict(zip(out.items.tolist(), out.sources.tolist()))[3] == "a+b"
    assert sorted(out.items.tolist()) == [1, 2, 3, 4]
    assert len(p(UserContext(user_idx=0, constraints=Constraints(max_results=2)))) == 2


def test_pipeline_rejects_bad_arguments():
    with pytest.raises(ValueError, match="source"):
        Pipeline({"a": None}, CandidateMerger(), {}, k=3)
    with pytest.raises(ValueError, match="k must be"):
        Pipeline({"a": ListSource("a", [1])}, CandidateMerger(), {}, k=0)


def test_default_config_builds_and_every_stage_switches_off_by_one_override(tiny_dir):
    """The real configs/pipeline/default.yaml on the hand-made dataset (no text embeddings)."""
    from recsys.pipeline.recommender import Recommender

    base = OmegaConf.load(CONFIG)
    with pytest.raises(ValueError, match="text_emb"):  # content retrieval needs item_text_emb.npy: clear error
        Recommender(tiny_dir, base, history="test")
    no_content = OmegaConf.merge(base, OmegaConf.from_dotlist(["sources.content=null"]))
    rec = Recommender(tiny_dir, no_content, history="test")
    assert list(rec.pipeline.stages) == ["available", "age", "consumed", "negative", "constraints", "mmr",
                                         "category_cap", "exploration"]
    for stage in list(rec.pipeline.stages):
        cfg = OmegaConf.merge(no_content, OmegaConf.from_dotlist([f"stages.{stage}=null"]))
        assert stage not in build_pipeline(cfg, **rec.objects).stages
    cands, ctx = rec.recommend(0, k=3)
    assert 0 < len(cands) <= 3
    assert not set(cands.items.tolist()) & set(ctx.history.tolist())
    assert any("category overlap" in f for f in cands.trace["fallbacks"])  # MMR without embeddings
    cold, cold_ctx = rec.recommend(None, k=3)
    assert cold_ctx.is_cold and set(cold.sources.tolist()) == {"popularity"}


def test_hydra_compose_override_idiom(tiny_dir):
    """`pipeline.stages.mmr=null` on a composed config removes the stage."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG.parent.parent), version_base="1.3"):
        cfg = compose("serve", overrides=["pipeline.stages.mmr=null", "pipeline.sources.content=null"])
    from recsys.pipeline.recommender import Recommender

    rec = Recommender(tiny_dir, cfg.pipeline, history="test")
    assert "mmr" not in rec.pipeline.stages and "exploration" in rec.pipeline.stages


def test_recommend_cli_run(ml100k_dir, tmp_path):
    """`python -m recsys.recommend user_id=...` composed and run in-process on prepared ML-100K."""
    from hydra import compose, initialize_config_dir

    from recsys.recommend import run

    with initialize_config_dir(str(CONFIG.parent.parent), version_base="1.3"):
        cfg = compose("recommend", overrides=[f"paths.data_dir={ml100k_dir.parent}", "data_name=ml100k",
                                              "pipeline.sources.content=null", f"feedback_db={tmp_path / 'fb.sqlite'}",
                                              "user_id='196'", "k=4", "session_items=['1']",
                                              "+constraints={exclude_categories:[Comedy]}"])
    out, objs = run(cfg)
    rec = objs["recommender"]
    assert len(out["items"]) == 4 and not out["cold_start"]
    for it in out["items"]:
        j = rec.item_idx(it["item_id"])
        assert "Comedy" not in rec.catalog.category_names(j) and it["item_id"] != "1"
    assert out["trace"]["removed"]["constraints"] > 0
    cold, _ = run(compose_cold(ml100k_dir, tmp_path))
    assert cold["cold_start"] and len(cold["items"]) == 10


def compose_cold(ml100k_dir, tmp_path):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIG.parent.parent), version_base="1.3"):
        return compose("recommend", overrides=[f"paths.data_dir={ml100k_dir.parent}", "data_name=ml100k",
                                               "pipeline.sources.content=null", f"feedback_db={tmp_path / 'fb2.sqlite'}",
                                               "user_id=nobody"])


def test_two_tower_source_without_artifacts_says_what_to_run(tmp_path):
    from recsys.pipeline.recommender import two_tower_source

    with pytest.raises(FileNotFoundError, match="recsys.index"):
        two_tower_source(str(tmp_path / "no-run"))
