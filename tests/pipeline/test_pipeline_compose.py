"""Pipeline composition: declared order, sizes relative to k, one trace writer, the real configs on data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from recsys.core.candidates import Candidates, Constraints, UserContext
from recsys.pipeline.build import build_recommender, compose_serve
from recsys.pipeline.pipeline import Pipeline, build_pipeline
from recsys.pipeline.sizing import Size, as_size
from recsys.retrieval.merge import CandidateMerger

from pipeline_helpers import ListSource

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_YAML = ROOT / "configs" / "pipeline" / "untrained.yaml"


class Reverse:
    def __call__(self, ctx, cands):
        return cands.take(np.arange(len(cands))[::-1])


class DropFirst:
    def __call__(self, ctx, cands):
        cands.trace["removed"] = {"first": 1}
        return cands.take(np.arange(1, len(cands)))


class FreshList:
    """Builds new Candidates with its own report, as the LLM stages do (``dict(c.trace)`` + its section)."""

    def __call__(self, ctx, cands):
        report = {**cands.trace, "llm_rerank": {"parse_failures": 2, "fallback": True}, "fallbacks": ["fresh: kept"]}
        return Candidates(cands.items, cands.scores, cands.sources, dict(cands.features), None, report)


class Forgetful:
    """Returns rows with a brand-new empty trace (what used to wipe the earlier stages' entries)."""

    def __call__(self, ctx, cands):
        return Candidates(cands.items, cands.scores, cands.sources)


class TakesK:
    def __init__(self):
        self.seen = []

    def __call__(self, ctx, cands, k):
        self.seen.append(k)
        return cands.head(k + 1)


def test_stages_run_in_order_and_the_pipeline_alone_writes_the_trace():
    p = Pipeline({"a": ListSource("a", [5, 6, 7, 8])}, CandidateMerger(),
                 {"rev": Reverse(), "drop": DropFirst(), "fresh": FreshList(), "forget": Forgetful()}, k=2)
    out = p(UserContext(user_idx=0))
    assert out.items.tolist() == [7, 6]  # [5,6,7,8] -> [8,7,6,5] -> [7,6,5] -> head 2
    t = out.trace
    assert list(t["stages"]) == ["rev", "drop", "fresh", "forget"] and list(t["sources"]) == ["a"]
    assert set(t["latency_ms"]) == {"source/a", "merge", "rev", "drop", "fresh", "forget", "total"}
    assert t["counts"] == {"source/a": 4, "merge": 4, "rev": 4, "drop": 3, "fresh": 3, "forget": 3}
    # every stage's report survives the stages after it, under its own name
    assert t["stages"]["drop"]["removed"] == {"first": 1} and t["removed"] == {"first": 1}
    assert t["stages"]["fresh"]["details"] == {"parse_failures": 2, "fallback": True}
    assert t["fallbacks"] == ["fresh: kept"] and t["stages"]["drop"]["n_in"] == 4 and t["k"] == 2
    p2 = Pipeline({"a": ListSource("a", [5, 6, 7, 8])}, CandidateMerger(), {"rev": None, "drop": DropFirst()}, k=2)
    assert p2(UserContext(user_idx=0)).items.tolist() == [6, 7]  # a null stage is absent


def test_merger_records_every_source_and_max_results_caps_k():
    p = Pipeline({"a": ListSource("a", [1, 2, 3]), "b": ListSource("b", [3, 4])}, CandidateMerger(), {}, k=10)
    out = p(UserContext(user_idx=0))
    assert dict(zip(out.items.tolist(), out.sources.tolist()))[3] == "a+b"
    assert sorted(out.items.tolist()) == [1, 2, 3, 4]
    assert out.trace["warnings"] == ["only 4 of 10 items: the candidate sources proposed only 4 items"]
    capped = p(UserContext(user_idx=0, constraints=Constraints(max_results=2)))
    assert len(capped) == 2 and capped.trace["k"] == 2 and capped.trace["warnings"] == []


def test_the_request_k_reaches_stages_that_name_it():
    stage = TakesK()
    p = Pipeline({"a": ListSource("a", list(range(50)))}, CandidateMerger(), {"s": stage, "rev": Reverse()}, k=10)
    assert len(p(UserContext(user_idx=0), k=7)) == 7 and len(p(UserContext(user_idx=0))) == 10
    assert stage.seen == [7, 10]


def test_short_list_warning_says_which_filters_removed_what():
    class DropOdd:
        def __call__(self, ctx, cands):
            keep = cands.items % 2 == 0
            cands.trace["removed"] = {"odd": int((~keep).sum())}
            return cands.take(keep)

    p = Pipeline({"a": ListSource("a", list(range(12)))}, CandidateMerger(), {"odd": DropOdd()}, k=10)
    assert p(UserContext(user_idx=0), k=8).trace["warnings"] == [
        "only 6 of 8 items: 6 left after the odd filter; removed by filters: odd 6"]
    assert p(UserContext(user_idx=0), k=6).trace["warnings"] == []


def test_sizes_relative_to_k():
    assert [as_size({"times": 2, "min": 20})(k) for k in (5, 10, 30)] == [20, 20, 60]
    assert [as_size({"times": 0.1, "min": 1})(k) for k in (5, 19, 30, 100)] == [1, 1, 3, 10]
    assert as_size(7)(100) == 7 and as_size({})(13) == 13 and as_size({"plus": -1})(5) == 4
    assert as_size({"times": 2, "min": 20, "max": 26})(30) == 26
    assert Size(times=2, min=20).describe() == "max(2k, 20)" and as_size(5).describe() == "5"
    with pytest.raises(ValueError, match="unknown size keys"):
        as_size({"time": 2})
    with pytest.raises(TypeError):
        as_size("2k")


def declared_stages(cfg) -> list[str]:
    return [n for n, node in cfg.pipeline.stages.items() if node is not None]


def test_built_stage_order_is_the_declared_order(tiny_dir):
    """The composed serve config on the hand-made dataset (no text embeddings)."""
    with pytest.raises(ValueError, match="text_emb"):  # content retrieval needs item_text_emb.npy: clear error
        build_recommender(compose_serve(["pipeline=untrained", f"dataset_dir={tiny_dir}", "history=test"]))
    cfg = compose_serve(["pipeline=untrained", f"dataset_dir={tiny_dir}", "history=test", "pipeline.sources.content=null"])
    assert list(cfg.pipeline.stages) == list(OmegaConf.load(DEFAULT_YAML).stages)  # YAML order kept by composition
    rec = build_recommender(cfg)
    assert list(rec.pipeline.stages) == declared_stages(cfg) == [
        "available", "age", "consumed", "negative", "constraints", "mmr", "category_cap", "exploration", "top_k",
        "explain"]  # llm=none: no llm_rerank; explain writes templates; no ranker declared
    for stage in list(rec.pipeline.stages):
        off = compose_serve(["pipeline=untrained", f"dataset_dir={tiny_dir}", "history=test", "pipeline.sources.content=null",
                             f"pipeline.stages.{stage}=null"])
        assert stage not in build_pipeline(off.pipeline, **rec.objects).stages
    cands, ctx = rec.recommend(0, k=3)
    assert 0 < len(cands) <= 3 and len(cands.explanations) == len(cands)
    assert not set(cands.items.tolist()) & set(ctx.history.tolist())
    assert any("category overlap" in f for f in cands.trace["fallbacks"])  # MMR without embeddings
    cold, cold_ctx = rec.recommend(None, k=3)
    assert cold_ctx.is_cold and set(cold.sources.tolist()) == {"popularity"}


def test_artifacts_are_built_first_and_injected_by_name(tiny_dir):
    cfg = compose_serve(["pipeline=untrained", f"dataset_dir={tiny_dir}", "pipeline.sources.content=null", "pipeline.sources.item2item=null",
                         "pipeline.sources.popularity=null",
                         "+pipeline.artifacts.trained_items={_target_: pipeline_helpers.trained_items, n: 6}",
                         "+pipeline.sources.artifact={_target_: pipeline_helpers.ArtifactSource}"])
    rec = build_recommender(cfg)
    cands, _ = rec.recommend(4, k=8)
    assert set(cands.items.tolist()) <= set(range(6)) and set(cands.sources.tolist()) == {"artifact"}
    assert "trained_items" in rec.info["artifacts"]


def test_llm_and_two_tower_pipelines_compose_in_their_declared_places():
    smol = compose_serve(["pipeline=untrained", "llm=smollm2"])
    names = list(smol.pipeline.stages)
    assert names.index("ranker") < names.index("available")  # the rank slot comes before the filters
    assert names.index("exploration") < names.index("llm_rerank") < names.index("top_k") < names.index("explain")
    assert smol.pipeline.stages.llm_rerank._target_ == "recsys.llm.rerank.LLMReranker"
    assert smol.pipeline.stages.explain.top_k == 5
    assert compose_serve(["pipeline=untrained", "llm=smollm2", "pipeline.stages.llm_rerank=null"]).pipeline.stages.llm_rerank is None
    tt = compose_serve(["pipeline=two_tower"])
    art = tt.pipeline.artifacts.two_tower
    assert art.checkpoint == "best" and "trusted" not in art and "trusted" not in tt.pipeline.sources.two_tower
    assert art.run_dir.endswith("/train/ml100k-two_tower-seed42")  # the runs engineer's stable pointer
    assert list(tt.pipeline.stages) == list(compose_serve(["pipeline=untrained"]).pipeline.stages)


def test_two_tower_without_artifacts_says_what_to_run(tmp_path):
    from recsys.pipeline.recommender import load_two_tower

    with pytest.raises(FileNotFoundError, match="recsys.train"):
        load_two_tower(str(tmp_path / "no-run"))


@pytest.fixture(scope="module")
def ml100k_rec(ml100k_data_root):
    """The default serve config, unchanged, on prepared ML-100K with text embeddings."""
    return build_recommender(compose_serve(["pipeline=untrained", f"paths.data_dir={ml100k_data_root}"]))


@pytest.mark.parametrize("k", [5, 10, 30, 100])
def test_sizes_follow_the_request_k(ml100k_rec, k):
    uid = ml100k_rec.contexts.user_idx("196")
    cands, _ = ml100k_rec.recommend(uid, k=k)
    t = cands.trace
    assert len(cands) == k and t["warnings"] == [] and t["k"] == k  # was 20 items + a false warning at k=30, 100
    explored = cands.features["explored"]
    assert explored.sum() == max(k // 10, 1) and explored[-1]  # slots within the final k (k=5: position 5)
    assert t["stages"]["mmr"]["n_out"] == max(2 * k, 20) and len(cands.explanations) == k
    assert t["stages"]["explain"]["n_in"] == k  # explanations are written for the final list only


def test_recommend_cli_run(ml100k_data_root):
    """`python -m recsys.recommend` composed and run in-process: constraints, session, cold start."""
    from recsys.recommend import format_items, format_trace, run

    cfg = compose_serve(["pipeline=untrained", f"paths.data_dir={ml100k_data_root}", "user_id='196'", "k=4", "session_items=['1']",
                         "+constraints={exclude_categories:[Comedy]}"], config_name="recommend")
    out, objs = run(cfg)
    rec = objs["recommender"]
    assert len(out["items"]) == 4 and not out["cold_start"] and out["used"]["pipeline"] == "untrained"
    for it in out["items"]:
        j = rec.item_idx(it["item_id"])
        assert "Comedy" not in rec.catalog.category_names(j) and it["item_id"] != "1"
    assert out["trace"]["removed"]["constraints"] > 0
    assert len(format_items(out, "196")) >= 7 + 4 and len(format_trace(out["trace"])) >= 3 + 1 + 10
    cold, _ = run(compose_serve(["pipeline=untrained", f"paths.data_dir={ml100k_data_root}", "user_id=nobody"], config_name="recommend"))
    assert cold["cold_start"] and len(cold["items"]) == 10


def test_recommend_cli_as_a_user_runs_it(ml100k_data_root, tmp_path):
    """The README's command, as a subprocess; only the data and output roots point at scratch dirs."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RECSYS_DATA": str(ml100k_data_root),
           "RECSYS_OUTPUTS": str(tmp_path / "outputs"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-m", "recsys.recommend", "pipeline=untrained", "user_id=196", "k=10", "show_trace=true"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()  # Hydra's console log shares stdout: the report starts at "pipeline"
    lines = lines[next(i for i, ln in enumerate(lines) if ln.startswith("pipeline untrained | llm none | dataset ")):]
    assert "artifacts: none" in lines[1]
    assert "top 10 of k=10" in res.stdout and sum(ln[:4].strip().isdigit() for ln in lines) == 10
    trace = lines[lines.index("trace:") + 1:]
    stages = [ln.split()[1] for ln in trace if ln.startswith("stage")]
    assert stages == declared_stages(compose_serve(["pipeline=untrained"]))
    assert trace[-1].startswith("total")
