"""LlamaRec LoRA fine-tuning: leakage-free examples (real ML-100K), loss and adapter round trip (real SmolLM2)."""

import numpy as np
import pytest

from recsys.llm.finetune import LoRAFinetuner, build_examples, load_adapter, split_last, verbalizer_loss
from recsys.llm.prompts import LABELS, verbalizer_prompt


def _pairs(df):
    return set(zip(df["user_idx"].tolist(), df["item_idx"].tolist()))


def test_examples_come_from_train_only(ml100k, ml100k_split):
    sp = ml100k_split
    ex = build_examples(ml100k, sp.train, n_candidates=20, seed=0)
    held_out = _pairs(sp.valid) | _pairs(sp.test)
    hist_df, last = split_last(sp.train)
    last_item = dict(zip(last["user_idx"], last["item_idx"]))
    train_hist = {u: g["item_idx"].tolist() for u, g in hist_df.groupby("user_idx")}
    assert len(ex) == hist_df["user_idx"].nunique() > 900  # every user with >= 2 train items
    for e in ex:
        assert (e.user_idx, e.target) not in held_out
        assert not any((e.user_idx, int(h)) in held_out for h in e.history)
        assert e.target == last_item[e.user_idx]  # the last TRAIN item, never valid/test
        assert sorted(e.history.tolist()) == sorted(train_hist[e.user_idx])
        assert len(e.candidates) == len(set(e.candidates.tolist())) == 20
        assert (e.candidates == e.target).sum() == 1  # the target is always among the candidates, once
        assert not set(e.candidates.tolist()) & set(e.history.tolist())  # consumed items are not candidates
    # the shuffle spreads the target over the letters (always-A would teach position, not preference)
    counts = np.bincount([e.target_pos for e in ex], minlength=20)
    assert counts.min() > 0 and counts.max() < 0.1 * len(ex)


def test_retriever_never_sees_the_pairs_it_is_asked_about(ml100k, ml100k_split):
    from recsys.models.itemknn import ItemKNN

    seen = {}

    class Recording(ItemKNN):
        def fit(self, dataset, split):
            seen["train"] = split.train
            seen["valid_test"] = len(split.valid) + len(split.test)
            return super().fit(dataset, split)

    ex = build_examples(ml100k, ml100k_split.train, n_candidates=10, max_users=50, seed=3, retriever_factory=Recording)
    fitted = _pairs(seen["train"])
    assert seen["valid_test"] == 0
    assert not fitted & (_pairs(ml100k_split.valid) | _pairs(ml100k_split.test))
    assert all((e.user_idx, e.target) not in fitted for e in ex)
    assert len(fitted) == len(ml100k_split.train) - ml100k_split.train["user_idx"].nunique()


def test_examples_are_seeded(ml100k, ml100k_split):
    a = build_examples(ml100k, ml100k_split.train, n_candidates=8, max_users=30, seed=1)
    b = build_examples(ml100k, ml100k_split.train, n_candidates=8, max_users=30, seed=1)
    c = build_examples(ml100k, ml100k_split.train, n_candidates=8, max_users=30, seed=2)
    assert [(e.user_idx, e.candidates.tolist()) for e in a] == [(e.user_idx, e.candidates.tolist()) for e in b]
    assert [e.user_idx for e in a] != [e.user_idx for e in c]
    with pytest.raises(ValueError, match="n_candidates"):
        build_examples(ml100k, ml100k_split.train, n_candidates=27)


# -- real SmolLM2 ---------------------------------------------------------------

@pytest.fixture(scope="module")
def tuned(smollm2, ml100k, ml100k_split):
    """Two real examples (8 candidates, 3 history items), 4 optimiser steps on the top 4 layers."""
    ex = build_examples(ml100k, ml100k_split.train, n_candidates=8, max_users=2, seed=0)
    ft = LoRAFinetuner(smollm2, ml100k.items, r=8, alpha=16, dropout=0.0, last_n_layers=4, lr=3e-3,
                       warmup_steps=1, batch_size=2, grad_accum=1, max_history=3, epochs=4, seed=0)
    return ft, ex


@pytest.mark.llm
@pytest.mark.slow  # ~35-55 s on the shared 2-core machine
def test_loss_falls_on_real_examples(tuned, ml100k):
    import torch

    ft, ex = tuned
    with torch.no_grad():
        before = float(verbalizer_loss(ft.backend, ft.model.eval(), ex, ml100k.items, 3))
    ft.fit(ex, progress=False)
    with torch.no_grad():
        after = float(verbalizer_loss(ft.backend, ft.model, ex, ml100k.items, 3))
    assert len(ft.history) == 4 and abs(ft.history[0]["loss"] - before) < 1e-3  # dropout 0: same loss as eval
    assert after < before - 0.3, (before, after, ft.history)


@pytest.mark.llm
@pytest.mark.slow
def test_adapter_round_trip_gives_identical_scores(tuned, smollm2, ml100k, tmp_path):
    ft, ex = tuned
    if not ft.history:  # run alone: train first
        ft.fit(ex, progress=False)
    prompts = [verbalizer_prompt(ml100k.items, e.history, e.candidates, 3) for e in ex]
    labels = LABELS[:8]
    zero_before = smollm2.score_choices(prompts, labels)
    mine = ft.tuned_backend().score_choices(prompts, labels)
    ft.save(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").exists() and (tmp_path / "adapter" / "finetune.json").exists()
    exact = load_adapter(smollm2, tmp_path / "adapter", merge=False).score_choices(prompts, labels)
    merged = load_adapter(smollm2, tmp_path / "adapter", merge=True).score_choices(prompts, labels)
    np.testing.assert_array_equal(exact, mine)
    np.testing.assert_allclose(merged, mine, atol=1e-4)  # folding LoRA into the weights only reorders float sums
    assert np.abs(mine - zero_before).max() > 1e-2  # the adapter changed the scores
    np.testing.assert_array_equal(smollm2.score_choices(prompts, labels), zero_before)  # base model untouched
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(smollm2, tmp_path)


def test_verbalizer_loss_is_restricted_to_candidate_letters():
    """Hand-computed: letter logits (0, 0, ln 2) and a huge non-letter logit; target B -> loss = ln 4."""
    import math
    import types

    import torch

    from llm_fakes import tiny_items
    from recsys.llm.finetune import RankExample

    class FakeBackend:
        def _encode(self, prompts):
            return {"input_ids": torch.zeros(len(prompts), 3, dtype=torch.long)}

        def label_token_ids(self, labels):
            return [5, 6, 7][: len(labels)]

    def model(input_ids, logits_to_keep):
        assert logits_to_keep == 1
        row = torch.full((10,), -5.0)
        row[[5, 6, 7]] = torch.tensor([0.0, 0.0, math.log(2.0)])
        row[0] = 100.0  # not a candidate letter: must not count
        return types.SimpleNamespace(logits=row.expand(len(input_ids), 1, 10))

    ex = [RankExample(0, np.array([1, 2]), np.array([3, 4, 5]), target_pos=1)] * 2
    loss = verbalizer_loss(FakeBackend(), model, ex, tiny_items(10), max_history=5)
    assert abs(float(loss) - math.log(4.0)) < 1e-6


@pytest.mark.parametrize("name", ["finetune_smollm2", "finetune_gpu"])
def test_finetune_configs_compose(name):
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "configs" / "llm"), version_base="1.3"):
        cfg = compose(name)
    GlobalHydra.instance().clear()
    assert cfg.finetune.trainer._target_ == "recsys.llm.finetune.LoRAFinetuner"
    assert cfg.rerank.max_history == cfg.finetune.trainer.max_history  # tuned and evaluated on the same prompt
    assert cfg.backend._target_.endswith("TransformersBackend") and cfg.rerank.mode == "verbalizer"
    if name == "finetune_gpu":
        assert cfg.backend.device == "cuda" and cfg.backend.dtype == "bfloat16" and "8B" in cfg.backend.model
        assert cfg.finetune.examples.max_examples is None and cfg.finetune.trainer.last_n_layers is None
    else:  # the CPU recipe of the report: >= 10x the first run's 96 users
        assert cfg.finetune.examples.max_examples >= 960 and cfg.finetune.examples.max_users is None
