"""prepare(): cache key, redo on change, nothing lost on failure (temporary dir + swap), a lock
for concurrent prepares, the recorded fingerprint; the Hydra entry point and data configs."""

import functools
import hashlib
import os
import subprocess
import sys
import textwrap
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


def _snapshot(d: Path) -> dict:
    """Every file under ``d`` (hidden ones too) -> sha256 of its bytes."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()}


def test_a_failed_prepare_leaves_the_old_dataset_as_it_was(tmp_path):
    out = _prep(tmp_path)
    before = _snapshot(out)

    def boom(inter):
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError) as e:
        _prep(tmp_path, split=boom)
    assert "left as it was" in "".join(getattr(e.value, "__notes__", []))
    assert _snapshot(out) == before
    assert not list(tmp_path.glob(".syn.tmp-*")) and not list(tmp_path.glob(".syn.old-*"))


def test_meta_records_the_fingerprint_of_the_written_files(tmp_path):
    from recsys.utils.artifacts import compute_dataset_fingerprint, dataset_fingerprint

    out = _prep(tmp_path)
    meta = DatasetMeta.load(out / "meta.json")
    assert meta.extra["fingerprint"] == compute_dataset_fingerprint(out) == dataset_fingerprint(out)
    assert set(meta.extra["fingerprint_files"]) >= {"interactions.parquet", "splits/loo/train.parquet"}
    _prep(tmp_path, kcore=10)
    assert DatasetMeta.load(out / "meta.json").extra["fingerprint"] != meta.extra["fingerprint"]


def test_a_prepare_killed_mid_swap_gets_its_old_dataset_back(tmp_path):
    out = _prep(tmp_path)
    before = _snapshot(out)
    out.rename(tmp_path / ".syn.old-12345")  # killed between the two renames
    (tmp_path / ".syn.tmp-abc").mkdir()  # and a half-built directory of another killed prepare
    assert _prep(tmp_path) == out  # same config: the restored dataset is up to date
    assert _snapshot(out) == before and not list(tmp_path.glob(".syn.*-*"))


def test_bad_reader_path_keeps_the_prepared_dataset_byte_for_byte(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "recsys.data.prepare", "data=ml100k", "data.text_embeddings=false",
           f"paths.data_dir={tmp_path}", f"paths.log_dir={tmp_path}/logs"]
    assert subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, timeout=300).returncode == 0
    before = _snapshot(tmp_path / "ml100k")
    res = subprocess.run([*cmd, "data.reader.path=/nonexistent/ml-100k"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode != 0
    said = res.stdout + res.stderr
    assert "/nonexistent/ml-100k: not found" in said and f"{tmp_path / 'ml100k'} was left as it was" in said, said[-2000:]
    assert _snapshot(tmp_path / "ml100k") == before
    assert not list(tmp_path.glob(".ml100k.tmp-*"))


def test_a_refreshed_dataset_is_not_replaced_by_a_prepare(tmp_path):
    import json

    out = _prep(tmp_path)
    meta = json.loads((out / "meta.json").read_text())
    meta["extra"]["refresh"] = {"from": "data/syn-original", "last_event_id": 7}
    (out / "meta.json").write_text(json.dumps(meta))
    before = _snapshot(out)
    with pytest.raises(DataError, match="refreshed dataset.*left as it was"):
        _prep(tmp_path, kcore=10)
    assert _snapshot(out) == before
    _prep(tmp_path, kcore=10, force=True)  # an explicit force replaces it


SLOW_PREPARE = textwrap.dedent("""
    import functools, logging, sys, time
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    from recsys.data.prepare import prepare
    from recsys.data.splits import leave_one_out
    from recsys.data.synthetic import read_synthetic

    def slow_reader(**kw):
        time.sleep(3)  # long enough for the other process to reach the lock
        return read_synthetic(**kw)

    prepare("syn", functools.partial(slow_reader, cache_dir=sys.argv[1] + "/raw", n_users=300, n_items=200,
            n_interactions=6000, seed=1), functools.partial(leave_one_out), data_dir=sys.argv[1])
""")


def test_two_concurrent_prepares_build_once(tmp_path):
    # The reader's identity must be the same in both processes: the cache key names its function.
    script = tmp_path / "slow_prepare.py"
    script.write_text(SLOW_PREPARE)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), logs
    both = "".join(logs)
    assert both.count("prepare: wrote") == 1, logs
    assert "waiting for it" in both and "prepared meanwhile by another process" in both, logs  # it waited, then reused
    ds = load_dataset(tmp_path / "syn")
    assert len(load_split(tmp_path / "syn", "loo").train) > 0 and ds.meta.extra["fingerprint"]


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


def test_a_split_name_that_is_a_path_is_refused_and_the_dataset_kept(tmp_path):
    """``data.split.name=../../evil`` wrote outside the data directory and emptied splits/ (a walk finding)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    base = [sys.executable, "-m", "recsys.data.prepare", "data=synthetic", f"paths.data_dir={tmp_path / 'data'}",
            f"paths.log_dir={tmp_path}/logs", "data.reader.n_users=200", "data.reader.n_items=100",
            "data.reader.n_interactions=4000"]
    assert subprocess.run(base, cwd=ROOT, env=env, capture_output=True, timeout=300).returncode == 0
    before = _snapshot(tmp_path / "data" / "synthetic")
    res = subprocess.run([*base, "data.split.name=../../evil"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode != 0 and "split name '../../evil'" in res.stderr
    assert _snapshot(tmp_path / "data" / "synthetic") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "logs"] and not (tmp_path / "data" / "evil").exists()
