"""prepare(): cache key, redo on change, crash safety; the Hydra entry point and data configs."""

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recsys.data.io import load_dataset, load_split
from recsys.data.prepare import prepare
from recsys.data.schema import DataError, DatasetMeta
from recsys.data.splits import leave_one_out, temporal
from recsys.data.synthetic import read_synthetic

ROOT = Path(__file__).resolve().parents[2]
SMALL = dict(n_users=300, n_items=200, n_interactions=6000, seed=1)


def _prep(tmp_path, **kw):
    args = dict(name="syn", reader=functools.partial(read_synthetic, cache_dir=str(tmp_path / "raw"), **SMALL),
                split=functools.partial(leave_one_out), data_dir=tmp_path, kcore=5)
    args.update(kw)
    return prepare(**args)


def test_prepare_caches_and_redoes_on_change(tmp_path):
    out = _prep(tmp_path)
    meta = DatasetMeta.load(out / "meta.json")
    assert meta.extra["split"] == "loo" and meta.extra["prepare"]["kcore"] == 5
    stamp = (out / "interactions.parquet").stat().st_mtime_ns
    assert _prep(tmp_path) == out
    assert (out / "interactions.parquet").stat().st_mtime_ns == stamp  # cache hit: nothing rewritten
    _prep(tmp_path, kcore=10)
    meta10 = DatasetMeta.load(out / "meta.json")
    assert meta10.extra["prepare"]["kcore"] == 10 and meta10.n_interactions < meta.n_interactions
    ds = load_dataset(out)
    assert ds.interactions.groupby("user_idx").size().min() >= 10
    _prep(tmp_path, kcore=10, force=True)
    assert (out / "interactions.parquet").stat().st_mtime_ns != stamp


def test_split_change_replaces_old_split(tmp_path):
    out = _prep(tmp_path)
    _prep(tmp_path, split=functools.partial(temporal, valid_frac=0.1, test_frac=0.1))
    assert not (out / "splits" / "loo").exists()
    sp = load_split(out, "temporal")
    assert sp.train.timestamp.max() <= sp.test.timestamp.min()


def test_crash_leaves_no_meta_so_next_call_redoes(tmp_path):
    out = _prep(tmp_path)

    def boom(inter):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        _prep(tmp_path, split=boom)
    assert not (out / "meta.json").exists()
    assert _prep(tmp_path) == out and (out / "meta.json").exists()


def test_everything_filtered_out_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no interactions left"):
        _prep(tmp_path, kcore=10_000)


def test_prepared_ml100k_figures(ml100k_dir):
    meta = DatasetMeta.load(ml100k_dir / "meta.json")
    assert (meta.n_users, meta.n_items, meta.n_interactions) == (943, 1349, 99287)
    assert meta.implicit_threshold == 0.0 and meta.extra["split_sizes"] == {"train": 97401, "valid": 943, "test": 943}
    assert meta.extra["sparsity"] == pytest.approx(1 - 99287 / (943 * 1349))


@pytest.mark.parametrize("name", ["ml100k", "ml1m", "ml20m", "synthetic"])
def test_every_data_config_composes(name, tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.utils import instantiate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("prepare", overrides=[f"data={name}", f"paths.data_dir={tmp_path}"])
    GlobalHydra.instance().clear()
    assert cfg.data.name == name and cfg.data.split.name == "loo"
    reader, split = instantiate(cfg.data.reader), instantiate(cfg.data.split)
    assert isinstance(reader, functools.partial) and isinstance(split, functools.partial)
    assert split.func is leave_one_out


def test_hydra_entry_point(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HYDRA_FULL_ERROR="1")
    cmd = [sys.executable, "-m", "recsys.data.prepare", "data=synthetic", f"paths.data_dir={tmp_path}",
           f"paths.log_dir={tmp_path}/logs", "data.reader.n_users=200", "data.reader.n_items=100", "data.reader.n_interactions=4000"]
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "split loo" in res.stdout
    ds = load_dataset(tmp_path / "synthetic")
    assert ds.meta.source.startswith("synthetic:") and ds.meta.extra["prepare"]["reader"]["n_items"] == 100
