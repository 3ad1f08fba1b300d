"""ANN evaluation helpers: recall@K by hand, sweep rows, table and plot files."""

import numpy as np
import pytest

from recsys.retrieval import ann_eval
from recsys.retrieval.index import ItemIndex


def test_recall_at_k_hand_case():
    found = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    truth = np.array([[4, 3, 9, 10], [5, 6, 7, 8]])
    assert ann_eval.recall_at_k(found, truth) == pytest.approx((2 / 4 + 1.0) / 2)
    with pytest.raises(ValueError, match="differ in shape"):
        ann_eval.recall_at_k(found[:, :2], truth)


def test_sweep_rows_table_and_plot(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1000, 8)).astype(np.float32)
    q = rng.normal(size=(20, 8)).astype(np.float32)
    idx = ItemIndex("ivf_flat", nlist=10, nprobe=2, device="cpu").build(x)
    rows = ann_eval.evaluate(x, q, idx, k=10, values=[1, 10])
    assert [r["value"] for r in rows] == [1, 10] and rows[0]["param"] == "nprobe"
    assert rows[1]["recall"] == pytest.approx(1.0)  # all cells probed = exact
    assert rows[0]["recall"] < 1.0 and all(r["qps"] > 0 for r in rows)
    assert idx.config["nprobe"] == 2  # the sweep restores the configured knob
    flat = ann_eval.evaluate(x, q, ItemIndex("flat", device="cpu").build(x), k=10)
    assert len(flat) == 1 and flat[0]["recall"] == 1.0
    table = ann_eval.format_table(rows + flat, 10)
    assert table.count("\n") == 4 and "recall@10" in table
    png = ann_eval.plot(rows + flat, tmp_path / "p.png")
    assert png.stat().st_size > 1000
