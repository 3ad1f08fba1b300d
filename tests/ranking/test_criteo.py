"""Criteo-format reader, encoder and generator; AUC/log loss; a DLRM learns the generated signal."""

import math

import pytest
import torch

from recsys.data.criteo import (
    N_DENSE, N_SPARSE, CriteoEncoder, ctr_metrics, generate_rows, parse_line, read_rows, to_kjt, write_rows,
)
from recsys.data.schema import DataError
from recsys.models.dlrm import build_dlrm

torch.set_num_threads(1)


def test_generated_rows_parse(tmp_path):
    path = write_rows(tmp_path / "day_0.tsv", generate_rows(200, seed=1))
    rows = list(read_rows(path))
    assert len(rows) == 200
    assert all(len(r.dense) == N_DENSE and len(r.sparse) == N_SPARSE for r in rows)
    assert 0 < sum(r.label for r in rows) < 200
    assert list(generate_rows(5, seed=3)) == list(generate_rows(5, seed=3))


def test_parse_missing_fields_and_log_transform():
    line = "1\t" + "\t".join(["3", ""] + ["0"] * 11) + "\t" + "\t".join(["ff", ""] + ["0a"] * 24)
    row = parse_line(line)
    assert row.label == 1 and row.dense[:2] == [3, None] and row.sparse[:2] == ["ff", ""]
    enc = CriteoEncoder(hash_size=10).fit([row])
    t = enc.transform([row])
    assert t["dense"][0, 0].item() == pytest.approx(math.log(4.0))
    assert t["dense"][0, 1].item() == 0.0
    assert t["sparse"][0, 0].item() == 0xFF % 10 + 1 and t["sparse"][0, 1].item() == 0


@pytest.mark.parametrize(
    "bad,match",
    [
        ("1\t2\t3", "expected 40 tab-separated fields, got 3"),
        ("2" + "\t0" * 13 + "\ta" * 26, "label must be 0 or 1"),
        ("0\tx" + "\t0" * 12 + "\ta" * 26, "I1 must be an integer"),
        ("0" + "\t0" * 13 + "\tzz" + "\ta" * 25, "C1 must be a hex string"),
        # Python's int() accepts all of these; none is a Criteo integer
        ("0\t1_000" + "\t0" * 12 + "\ta" * 26, "I1 must be an integer"),
        ("0\t0x1f" + "\t0" * 12 + "\ta" * 26, "I1 must be an integer"),
        ("0\t 7" + "\t0" * 12 + "\ta" * 26, "I1 must be an integer"),
        ("0\t+7" + "\t0" * 12 + "\ta" * 26, "I1 must be an integer"),
        ("0\t" + "9" * 400 + "\t0" * 12 + "\ta" * 26, "I1 must be an integer"),  # log1p would overflow
        ("0" + "\t0" * 13 + "\t0x1f" + "\ta" * 25, "C1 must be a hex string"),
        ("0" + "\t0" * 13 + "\t1_f" + "\ta" * 25, "C1 must be a hex string"),
        ("0" + "\t0" * 13 + "\t " + "\ta" * 25, "C1 must be a hex string"),
        ("1.0" + "\t0" * 13 + "\ta" * 26, "label must be 0 or 1"),
        ("", "empty line"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, bad, match):
    good = list(generate_rows(3, seed=0))
    path = write_rows(tmp_path / "bad.tsv", good[:2] + [bad] + good[2:])
    with pytest.raises(DataError, match=f"bad.tsv:3: {match}"):
        list(read_rows(path))


def test_negative_integers_are_valid_and_non_ascii_bytes_name_the_line(tmp_path):
    row = parse_line("0\t-1" + "\t0" * 12 + "\ta" * 26)
    assert row.dense[0] == -1
    with pytest.raises(DataError, match="day_1:7: I1 must be an integer"):  # Arabic-Indic digits: int() accepts them
        parse_line("0\t\u0661\u0662" + "\t0" * 12 + "\ta" * 26, "day_1", 7)
    with pytest.raises(DataError, match="day_1:7: C1 must be a hex string"):
        parse_line("0" + "\t0" * 13 + "\t\u0661" + "\ta" * 25, "day_1", 7)
    good = list(generate_rows(3, seed=0))
    path = tmp_path / "bytes.tsv"
    path.write_bytes(("\n".join(good[:3]) + "\n").encode() + "0\t\u0661".encode() + b"\t0" * 12 + b"\ta" * 26 + b"\n")
    with pytest.raises(DataError, match="bytes.tsv:4: not ASCII text"):
        list(read_rows(path))
    path.write_bytes(("\n".join(good[:2]) + "\n").encode() + b"0\t\xff" + b"\t0" * 12 + b"\ta" * 26 + b"\n")
    with pytest.raises(DataError, match="bytes.tsv:3: not ASCII text"):
        list(read_rows(path))


def test_frequency_threshold_vocabulary():
    base = "0" + "\t1" * 13
    rows = [parse_line(base + "\t" + "\t".join([v] + ["1"] * 25)) for v in ["aa", "aa", "bb", "cc", "cc", "cc"]]
    enc = CriteoEncoder(min_frequency=2).fit(rows)
    assert enc.cardinalities()["C1"] == 3  # 0 = rare/unknown, aa, cc
    ids = enc.transform(rows + [parse_line(base + "\t" + "\t".join(["dd"] + ["1"] * 25))])["sparse"][:, 0].tolist()
    assert ids == [1, 1, 0, 2, 2, 2, 0]


def test_ctr_metrics_hand_computed():
    logits = torch.tensor([2.0, -1.0, 0.5, -3.0])
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0])
    m = ctr_metrics(logits, labels)
    # positives scored 2.0 and -3.0, negatives -1.0 and 0.5: 2 of 4 pairs ordered right
    assert m["auc"] == pytest.approx(0.5)
    expected = -(math.log(1 / (1 + math.exp(-2))) + math.log(1 - 1 / (1 + math.exp(1))) + math.log(1 - 1 / (1 + math.exp(-0.5))) + math.log(1 / (1 + math.exp(3)))) / 4
    assert m["logloss"] == pytest.approx(expected, rel=1e-5)


def test_dlrm_learns_generated_signal():
    torch.manual_seed(0)
    enc = CriteoEncoder(hash_size=1000)
    train = enc.transform(parse_line(x) for x in generate_rows(3000, seed=0))
    test = enc.transform(parse_line(x) for x in generate_rows(1000, seed=1))
    model = build_dlrm(enc.cardinalities(), N_DENSE, embedding_dim=8, dense_layers=(16,), over_layers=(16,))
    opt = torch.optim.Adagrad(model.parameters(), lr=0.05)
    for epoch in range(3):
        for i in range(0, 3000, 100):
            logits = model(train["dense"][i : i + 100], to_kjt(train["sparse"][i : i + 100]))
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, train["labels"][i : i + 100])
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        m = ctr_metrics(model(test["dense"], to_kjt(test["sparse"])), test["labels"])
    assert m["auc"] > 0.7
