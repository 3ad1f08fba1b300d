"""Which keys of a training config identify a run, and the run's hash.

A run is identified by its whole resolved config except the keys below, which cannot change
what the run computes (where files go, how progress is shown, whether to resume, tags...).
This list is the one place that says so; ``docs/architecture.md`` ("Artifacts") points here.

``NON_IDENTITY`` (dotted paths, ``*`` matches any part):

- ``hydra``: Hydra's own settings (run/sweep dirs, job logging, launcher internals).
- ``paths``: output/log/root directories. (The *input* location ``data.data_dir`` does count:
  another data directory may hold other data, so it is another run, never a resume.)
- ``logger``: experiment loggers (W&B, CSV) and their save dirs/names.
- ``task_name``, ``run_name``, ``run_id``: names of the directory the run goes to.
- ``tags``: labels for the experiment tracker.
- ``resume``: whether this command may continue the run (the decision, not the run).
- ``test``: whether the test stage is evaluated (training is the same; a later ``test=true``
  on the same run evaluates it then).
- ``trainer.default_root_dir``, ``trainer.enable_progress_bar``, ``trainer.enable_model_summary``,
  ``trainer.log_every_n_steps``: Lightning's output location and console/logging cadence; the same
  keys of a copy of the trainer config handed to a model's nested trainers
  (``*.trainer.config.<key>``: ``configs/model/dlrm.yaml`` passes ``${trainer}`` to the ranker's fits).
- ``callbacks.*.dirpath``, ``callbacks.*.filename``, ``callbacks.*.verbose``: where and under
  which name checkpoints are written, and how chattily.
- ``eval.progress``, ``eval.batch_size``, ``eval.device``: how the evaluator is shown, batched
  and placed (full-ranking metrics do not depend on them); ``model.module.progress``: the
  ranker's list-building bars.
- ``data.reader.cache_dir``, ``data.force``, ``data.text_batch_size``: the download cache, a
  forced rebuild, and the embedding batch size of ``prepare`` (the dataset it writes is covered
  by its fingerprint, which every run records and checks on resume).

Everything else counts: model, datamodule, trainer (epochs, precision, devices, strategy,
limits...), callbacks (monitor, patience...), eval protocol and cut-offs, data (reader, split,
filters, ``data_dir``), ``seed``, ``train``, ``optimized_metric``. A new key counts by default.

A key that names another run (``PARENT_RUNS``: the two-tower a ranker is trained behind) counts
by what that run holds, not only by its path: the identity records the parent's best checkpoint's
file hash (``_parents``), so retraining the parent under the same name makes the child a new run
whose log names the changed parent.

The hash is :func:`recsys.utils.artifacts.hash_of` of :func:`identity_config`. It is also an
OmegaConf resolver, ``${run_hash:}``, so that Hydra's run directory (``run_id`` in
``configs/train.yaml``) carries it before the job starts.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from recsys.utils.artifacts import hash_of

NON_IDENTITY: tuple[str, ...] = (
    "hydra", "paths", "logger", "task_name", "run_name", "run_id", "tags", "resume", "test",
    "trainer.default_root_dir", "trainer.enable_progress_bar", "trainer.enable_model_summary",
    "trainer.log_every_n_steps",
    *(f"*.trainer.config.{key}" for key in ("default_root_dir", "enable_progress_bar", "enable_model_summary",
                                            "log_every_n_steps")),
    "callbacks.*.dirpath", "callbacks.*.filename", "callbacks.*.verbose",
    "eval.progress", "eval.batch_size", "eval.device", "model.module.progress",
    "data.reader.cache_dir", "data.force", "data.text_batch_size",
    "*.journey",  # a pipeline's commands for a user (they name paths.log_dir): what makes the runs, not this one
)


# identity keys whose value is another run's directory (or stable name), read through ``_parents``
PARENT_RUNS: tuple[str, ...] = ("model.module.retriever_run",)


def is_identity_key(path: str) -> bool:
    return not any(fnmatchcase(path, pattern) for pattern in NON_IDENTITY)


def identity_config(cfg) -> dict:
    """The resolved identity keys of a training config (an OmegaConf node or a mapping), as plain values.

    Only identity keys are resolved, so the run directory (``paths.output_dir``, not known yet
    when Hydra picks the directory) is never needed.
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if not isinstance(cfg, DictConfig):
        cfg = OmegaConf.create(cfg)

    def walk(node: DictConfig, prefix: str) -> dict:
        out = {}
        for key in node.keys():
            path = f"{prefix}{key}"
            if not is_identity_key(path):
                continue
            if OmegaConf.is_missing(node, key):
                out[key] = "???"
                continue
            try:
                value = node[key]
            except Exception as e:  # an identity key may not depend on the run directory
                raise ValueError(f"config key {path!r} cannot be resolved for the run's identity: {e}") from e
            if isinstance(value, DictConfig):
                out[key] = walk(value, path + ".")
            elif isinstance(value, ListConfig):
                out[key] = OmegaConf.to_container(value, resolve=True)
            else:
                out[key] = value
        return out

    out = walk(cfg, "")
    parents = {key: parent_identity(value) for key in PARENT_RUNS if (value := _get(out, key)) is not None}
    if parents:
        out["_parents"] = parents
    return out


def _get(tree: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def parent_identity(run: str) -> str:
    """What a parent run holds: its best checkpoint's file hash ("missing" before it is trained,
    so the child's own run then fails with the parent's error, not a wrong reuse)."""
    from pathlib import Path

    from recsys.utils.artifacts import file_hash

    best = Path(str(run)) / "checkpoints" / "best.ckpt"
    return file_hash(best) if best.is_file() else "missing"


def config_hash(cfg) -> str:
    """The run's hash: 12 hex characters of :func:`identity_config`."""
    return hash_of(identity_config(cfg))


def identity_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``["model.module.dim: 64 -> 32", ...]``: the identity keys whose values differ."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b, path = old.get(key, "<absent>"), new.get(key, "<absent>"), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += identity_diff(a, b, path + ".")
        elif a != b:
            out.append(f"{path}: {a!r} -> {b!r}")
    return out


def register_resolver() -> None:
    """``${run_hash:}`` = :func:`config_hash` of the whole config (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("run_hash"):
        OmegaConf.register_new_resolver("run_hash", lambda *, _root_: config_hash(_root_))
