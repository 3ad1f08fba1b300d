"""The LLM stage on a pipeline's own input: input from the real config, blend chosen on validation only,
0 selectable, multi-cut-off LoRA examples that never read valid/test (real ML-100K)."""

from __future__ import annotations

import numpy as np
import pytest

from recsys.core.candidates import Candidates, UserContext
from recsys.eval.paired import paired_test, per_user_ndcg
from recsys.llm.finetune import build_examples, split_tail
from recsys.llm.rerank_eval import (PipelineInput, StageInput, choose_blend, compose_pipeline_cfg, pipeline_input,
                                    select_then_test, targets_of)


def _pairs(df):
    return set(zip(df["user_idx"].tolist(), df["item_idx"].tolist()))


# ---- blend choice -----------------------------------------------------------------------------
def _inp(history: str, n_users: int = 6, n: int = 5) -> PipelineInput:
    """Users whose lists are items 10u..10u+n-1, pipeline scores decreasing (the input order)."""
    cands = [Candidates(np.arange(10 * u, 10 * u + n), np.linspace(1, 0, n), np.array(["s"] * n)) for u in range(n_users)]
    ctxs = [UserContext(user_idx=u, history=np.zeros(0, np.int64)) for u in range(n_users)]
    return PipelineInput(history, np.arange(n_users), ctxs, cands, None)


def _llm_prefers_last(inp: PipelineInput) -> dict:
    """LLM scores that reverse every list (strongly enough that any b > 0.5 reverses it)."""
    return {j: np.linspace(-1, 1, len(c)) for j, c in enumerate(inp.cands)}


def test_blend_is_chosen_on_validation_only():
    inputs = {"valid": _inp("valid"), "test": _inp("test")}
    scores = {h: _llm_prefers_last(inputs[h]) for h in inputs}
    # validation: every target is first in the input order (the LLM, which reverses lists, hurts);
    # test: every target is last (the LLM would win). Reading test would choose b = 1.
    targets = {"valid": np.array([10 * u for u in range(6)]), "test": np.array([10 * u + 4 for u in range(6)])}
    sel = select_then_test(inputs, scores, targets, [0, 0.5, 1])
    assert sel["chosen"] == 0.0  # 0 is a valid answer: the stage switched off by validation
    assert sel["valid_curve"][0.0] == pytest.approx(1.0) and sel["valid_curve"][1.0] < 0.5
    # the choice does not move whatever the test targets are
    for t in (targets["test"], targets["valid"], np.full(6, -5)):
        assert select_then_test(inputs, scores, {**targets, "test": t}, [0, 0.5, 1])["chosen"] == 0.0
    # and it follows validation: targets last on validation -> b = 1
    flipped = {**targets, "valid": np.array([10 * u + 4 for u in range(6)])}
    assert select_then_test(inputs, scores, flipped, [0, 0.5, 1])["chosen"] == 1.0
    # test lists exist for b = 1 and the chosen b, the input order at b = 0
    assert set(sel["test_lists"]) == {1.0, 0.0}
    np.testing.assert_array_equal(sel["test_lists"][0.0], inputs["test"].lists())
    np.testing.assert_array_equal(sel["test_lists"][1.0], inputs["test"].lists()[:, ::-1])


def test_grid_must_hold_zero_and_ties_keep_the_input():
    inp = _inp("valid")
    with pytest.raises(ValueError, match="contain 0"):
        choose_blend(inp, _llm_prefers_last(inp), np.zeros(6, np.int64), [0.5, 1.0])
    # targets outside every list: all b tie at NDCG 0 -> the smallest b (input order) is kept
    b, curve = choose_blend(inp, _llm_prefers_last(inp), np.full(6, 999), [1.0, 0.0, 0.3])
    assert b == 0.0 and set(curve) == {0.0, 0.3, 1.0}


def test_paired_test_and_per_user_ndcg():
    lists = np.array([[1, 2, 3], [4, 5, 6]])
    np.testing.assert_allclose(per_user_ndcg(lists, np.array([2, 9]), k=3), [1 / np.log2(3), 0.0])
    same = paired_test(np.ones(5), np.ones(5))
    assert same["wilcoxon_p"] == 1.0 and same["users_better"] == same["users_worse"] == 0
    up = paired_test(np.r_[np.ones(30), np.zeros(5)], np.zeros(35))
    assert up["wilcoxon_p"] < 0.01 and up["users_better"] == 30


# ---- LoRA examples: several cut-offs, train only ----------------------------------------------
def test_multi_cutoff_examples_never_read_valid_or_test(ml100k, ml100k_split):
    from recsys.models.itemknn import ItemKNN

    sp, seen = ml100k_split, {}

    class Recording(ItemKNN):
        def fit(self, dataset, split):
            seen["train"], seen["valid_test"] = split.train, len(split.valid) + len(split.test)
            return super().fit(dataset, split)

    ex = build_examples(ml100k, sp.train, n_candidates=20, cutoffs_per_user=3, seed=0, retriever_factory=Recording)
    seqs = {u: g["item_idx"].tolist() for u, g in sp.train.sort_values(["user_idx", "timestamp"], kind="stable").groupby("user_idx")}
    held_out = _pairs(sp.valid) | _pairs(sp.test)
    assert len(ex) >= 960 and len({e.user_idx for e in ex}) == sum(len(s) >= 2 for s in seqs.values())
    assert seen["valid_test"] == 0 and not _pairs(seen["train"]) & held_out
    fitted = _pairs(seen["train"])
    _, tail = split_tail(sp.train, 3)
    assert fitted == _pairs(sp.train) - _pairs(tail)  # fitted on the rows before each user's first cut-off
    per_user = {}
    for e in ex:
        s = seqs[e.user_idx]
        assert e.cutoff >= len(s) - 3 and e.target == s[e.cutoff]  # one of the last 3 TRAIN items
        assert e.history.tolist() == s[: e.cutoff]  # history = the train items before it, in order
        assert (e.user_idx, e.target) not in held_out and (e.user_idx, e.target) not in fitted
        assert (e.candidates == e.target).sum() == 1 and not set(e.candidates.tolist()) & set(e.history.tolist())
        per_user[e.user_idx] = per_user.get(e.user_idx, 0) + 1
    assert max(per_user.values()) == 3
    capped = build_examples(ml100k, sp.train, n_candidates=20, cutoffs_per_user=3, seed=0, max_examples=1000)
    assert len(capped) == 1000 and {(e.user_idx, e.cutoff) for e in capped} <= {(e.user_idx, e.cutoff) for e in ex}


# ---- the input comes from the pipeline's config ------------------------------------------------
def test_input_is_what_the_configured_pipeline_hands_its_llm_slot(ml100k_dir, ml100k_split):
    from recsys.pipeline.build import build_recommender, compose_serve

    over = ["pipeline=untrained", f"dataset_dir={ml100k_dir}", "pipeline.stages.exploration=null", "pipeline.sources.content=null"]
    cfg = compose_pipeline_cfg(over, "valid")
    assert cfg.pipeline.name == "untrained" and cfg.history == "valid" and cfg.llm.name == "none"
    assert cfg.pipeline.stages.llm_rerank._target_.endswith("StageInput")
    users = np.array([0, 5, 17])
    inp = {h: pipeline_input(over, h, 20, users, progress=False) for h in ("valid", "test")}
    served = build_recommender(compose_serve([*over, "history=valid"]))  # llm=none: the same stages, served
    assert isinstance(inp["valid"].info, dict) and inp["valid"].info["k"] == served.pipeline.k
    for j, u in enumerate(users):
        c, ctx = served.recommend(int(u))
        np.testing.assert_array_equal(inp["valid"].cands[j].items[: len(c)], c.items)  # the served list is its head
        assert len(inp["valid"].cands[j]) == 20
        valid_item = int(targets_of(ml100k_split, "valid", users)[j])
        assert valid_item not in inp["valid"].ctxs[j].history and valid_item in inp["test"].ctxs[j].history
        assert valid_item not in inp["test"].cands[j].items  # consumed at test time
    with pytest.raises(KeyError, match="declares no stage 'rerank_here'"):
        compose_pipeline_cfg(over, "valid", slot="rerank_here")
    with pytest.raises(ValueError, match="set by the evaluation"):
        compose_pipeline_cfg([*over, "llm=smollm2"], "valid")


def test_stage_input_passes_the_list_on():
    rec = StageInput()
    c = Candidates(np.array([3, 1]), np.array([0.5, 0.2]), np.array(["a", "b"]))
    assert rec(UserContext(user_idx=0, history=np.zeros(0, np.int64)), c) is c and rec.last is c


def test_blend_zero_gives_back_the_list_order_when_a_stage_reordered_without_rescoring():
    """Exploration moves rows and keeps their scores: b = 0 must still be the served order."""
    from recsys.llm.rerank import LLMReranker, blend_order
    from llm_fakes import ScriptedBackend, tiny_items

    scores = np.array([1.0, 0.95, 0.2, 0.9, 0.85])  # row 2 was moved up by exploration
    np.testing.assert_array_equal(blend_order(np.arange(5.0), scores, 0.0), np.arange(5))
    inp = _inp("valid", n_users=1)
    inp.cands[0] = Candidates(inp.cands[0].items, scores, inp.cands[0].sources)
    from recsys.llm.rerank_eval import blended_lists

    np.testing.assert_array_equal(blended_lists(inp, {0: np.arange(5.0)}, 0.0), inp.lists())
    rr = LLMReranker(ScriptedBackend(score_fn=lambda p, labels: np.arange(len(labels), dtype=np.float32)),
                     tiny_items(), top_n=5, blend=0.0)
    c = Candidates(np.array([3, 1, 4, 0, 2]), scores, np.array(["s"] * 5))
    out = rr(UserContext(user_idx=0, history=np.array([5, 6])), c)
    np.testing.assert_array_equal(out.items, c.items)


@pytest.mark.parametrize("args, says", [
    (["--pipeline", "nosuch"], "eval_llm_pipeline.py: MissingConfigException: In 'serve': Could not find 'pipeline/nosuch'"),
    (["--pipeline", "untrained", "--grid", "0.5,1"], "eval_llm_pipeline.py: UsageError: --grid 0.5,1: must include 0"),
    (["--pipeline", "untrained", "--adapter", "/nonexistent"], "eval_llm_pipeline.py: FileNotFoundError: --adapter /nonexistent"),
])
def test_eval_script_refuses_bad_input_in_one_line_before_any_pipeline_runs(args, says, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    res = subprocess.run([sys.executable, str(root / "scripts" / "eval_llm_pipeline.py"), *args, "--out", str(tmp_path / "x.json")],
                         cwd=root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and res.stderr.startswith(says), res.stderr[-2000:]
    assert "Traceback" not in res.stderr and not (tmp_path / "x.json").exists()


@pytest.mark.slow
@pytest.mark.llm
def test_eval_script_end_to_end_with_the_real_smollm2(ml100k_dir, tmp_path):
    """The entry point as a user runs it: a configured pipeline, the real SmolLM2, rows + choice in the JSON."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "llm_pipeline.json"
    cmd = [sys.executable, str(root / "scripts" / "eval_llm_pipeline.py"), "--pipeline", "untrained",
           "--override", f"dataset_dir={ml100k_dir}", "--override", "pipeline.sources.content=null",
           "--n-users", "6", "--grid", "0,0.5,1", "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    d = json.loads(out.read_text())
    assert [r["row"] for r in d["rows"]][:2] == ["input", "zero-shot b=1"]
    assert d["chosen_blend"]["zero-shot"] in (0.0, 0.5, 1.0) and d["n_users"] == 6
    assert d["input"]["test"]["pipeline"] == "untrained" and d["input"]["valid"]["top_n"] == 20
    chosen = d["rows"][2]
    assert chosen["blend"] == d["chosen_blend"]["zero-shot"]
    if chosen["blend"] == 0.0:  # validation switched the stage off: test is the input, exactly
        assert chosen["ndcg@10"] == d["rows"][0]["ndcg@10"] and chosen["paired_vs_input"]["wilcoxon_p"] == 1.0
