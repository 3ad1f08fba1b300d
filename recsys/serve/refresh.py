"""The feedback loop: served feedback -> training interactions -> refreshed dataset and models.

    python -m recsys.serve.refresh --dataset-dir data/ml100k --feedback-db outputs/serve/feedback.sqlite \
        --out-dir data/ml100k-refresh \
        --retrain "python -m recsys.train experiment=ml100k/two_tower data=refreshed"

1. ``assign_users``: an event of a user the tables do not know (a new user,
   served cold start) gets a new user row (``user_idx`` after the last one,
   demographics unknown), so their feedback is kept; anonymous events (no
   ``user_id``) cannot be anyone's history and are dropped.
   ``events_to_interactions``: feedback events of users with a ``user_idx`` become
   interactions in the canonical schema (``value`` on the rating scale):
   a rating keeps its stars, a click or a long dwell counts as ``click_value``
   (a positive "watched"), a skip as ``skip_value`` (<= the negative threshold,
   so the context builder treats it as a dislike); impressions are exposure,
   not interactions, and are dropped. Duplicate (user, item) events keep the
   latest. The summary says how many events were kept and why the others were
   dropped (``dropped``: anonymous, impression, short dwell, superseded).
   Negative feedback is kept as low values in the refreshed interactions, so a
   server started on the refreshed dataset with a NEW feedback store
   (``python -m recsys.serve data_name=ml100k-refresh``) still hides a skipped
   or 1-star item: the context builder reads values at or below the negative
   threshold as dislikes (docs/conversation.md, "Feedback and refresh").
2. ``refresh_dataset``: writes a new prepared dataset directory (tables,
   ``meta.json`` last as the completion marker, the text embeddings copied) in
   which the new interactions are appended to ``interactions`` and to the
   training part of every split (valid/test stay untouched, so offline numbers
   remain comparable). ``meta.extra["refresh"]`` records the last event id
   consumed, so the next refresh continues from there.
3. Models: the pipeline's start-up-fitted parts (item-to-item neighbours,
   popularity, content profiles) refresh when the server or ``Recommender``
   loads the new directory. Trained models (two-tower, ranker) are fine-tuned
   by the training entry point on the new directory: ``configs/data/refreshed.yaml``
   reads it as a prepared dataset (``refreshed_dataset``; it is never re-prepared
   from the raw files, which would drop the feedback), so the one command is
   ``python -m recsys.train experiment=ml100k/<model> data=refreshed``
   (``--retrain`` runs it after the refresh, as an argument list, no shell).
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from recsys.data.schema import INTERACTION_COLUMNS, DataError

log = logging.getLogger(__name__)
NEGATIVE_VALUE = 2.0  # serve.yaml's negative_threshold: values at or below it are dislikes (the summary counts them)


def events_to_interactions(events: pd.DataFrame, click_value: float = 4.0, skip_value: float = 1.0,
                           dwell_click_s: float = 30.0, after_timestamp: int | None = None) -> pd.DataFrame:
    """Feedback events (``FeedbackStore.events()``) -> interactions (user_idx, item_idx, timestamp, value).

    ``after_timestamp``: the dataset's last timestamp; the events are shifted so the first one falls
    one second after it, keeping their order and spacing (None keeps the stored wall-clock times).
    """
    ev = events[events["user_idx"].notna()].copy()
    value = pd.Series(np.nan, index=ev.index, dtype="float64")
    value[ev["event"] == "rating"] = ev.loc[ev["event"] == "rating", "value"]
    value[ev["event"] == "click"] = click_value
    value[(ev["event"] == "dwell") & (ev["value"] >= dwell_click_s)] = click_value
    value[ev["event"] == "skip"] = skip_value
    ev["value"] = value
    ev = ev[ev["value"].notna()]
    wall = ev["created_at"].astype(np.float64)
    stamp = wall if after_timestamp is None or not len(ev) else int(after_timestamp) + 1 + (wall - wall.min())
    out = pd.DataFrame({
        "user_idx": ev["user_idx"].astype(np.int64), "item_idx": ev["item_idx"].astype(np.int64),
        "timestamp": stamp.round().astype(np.int64), "value": ev["value"].astype(np.float32),
        "_order": ev["event_id"].astype(np.int64),
    })
    out = out.sort_values("_order").drop_duplicates(["user_idx", "item_idx"], keep="last")
    return out[list(INTERACTION_COLUMNS)].reset_index(drop=True)


def assign_users(events: pd.DataFrame, users: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fill ``user_idx`` from the users table by ``user_id``; unknown ids get new rows -> (events, new user rows).

    New rows: ``user_idx`` after the table's last, the external ``user_id``, and the other (demographic)
    columns unknown (None; "unknown" for text columns).
    """
    ev = events.copy()
    by_id = dict(zip(users["user_id"].astype(str), users["user_idx"].astype(np.int64)))
    has_id = ev["user_id"].notna() & ev["user_idx"].isna()  # an event the store resolved keeps its user_idx
    unknown = [u for u in dict.fromkeys(ev.loc[has_id, "user_id"].astype(str)) if u not in by_id]
    start = int(users["user_idx"].max()) + 1 if len(users) else 0
    by_id.update({u: start + k for k, u in enumerate(unknown)})
    ev["user_idx"] = [i if pd.notna(i) else by_id[str(u)] if pd.notna(u) else np.nan
                      for i, u in zip(ev["user_idx"], ev["user_id"])]
    rows = pd.DataFrame({"user_idx": np.arange(start, start + len(unknown), dtype=np.int64), "user_id": unknown})
    for col in users.columns:
        if col not in rows:
            text = users[col].dtype == object or pd.api.types.is_string_dtype(users[col])
            rows[col] = "unknown" if text else None
    return ev, rows[list(users.columns)]


def dropped_events(events: pd.DataFrame, n_kept: int, dwell_click_s: float = 30.0) -> dict[str, int]:
    """Why events did not become interactions: {reason: count} (what ``events_to_interactions`` drops)."""
    ev = events[events["user_idx"].notna()]
    short = (ev["event"] == "dwell") & ~(ev["value"].astype(float) >= dwell_click_s)
    valued = int(len(ev) - (ev["event"] == "impression").sum() - short.sum())
    out = {"anonymous (no user_id)": int(events["user_idx"].isna().sum()),
           "impression (exposure, not taste)": int((ev["event"] == "impression").sum()),
           f"dwell under {dwell_click_s:g} s": int(short.sum()),
           "superseded by a later event on the same item": valued - int(n_kept)}
    return {k: v for k, v in out.items() if v}


def refresh_dataset(dataset_dir: str | Path, feedback_db: str | Path, out_dir: str | Path, **mapping) -> dict:
    """Write ``out_dir`` = ``dataset_dir`` + feedback interactions; -> summary dict.

    ``mapping`` goes to :func:`events_to_interactions`. Events already consumed by
    the refresh that produced ``dataset_dir`` (its ``meta.extra["refresh"]``) are skipped.
    """
    from recsys.data.io import load_dataset, load_split, save_dataset, save_split
    from recsys.serve.feedback_store import open_store

    src, out = Path(dataset_dir), Path(out_dir)
    if src.resolve() == out.resolve():
        raise ValueError(f"refresh writes a new directory; out_dir must differ from {src}")
    ds = load_dataset(src)
    since = int(ds.meta.extra.get("refresh", {}).get("last_event_id", 0))
    store = open_store(feedback_db)  # a SQLite path or a postgresql:// URL, as the server's feedback_db
    events = store.events(since_id=since)
    store.close()
    events, new_users = assign_users(events, ds.users)
    new = events_to_interactions(events, after_timestamp=int(ds.interactions["timestamp"].max()), **mapping)
    bad = new[new["item_idx"] >= ds.meta.n_items]
    if len(bad):
        raise DataError(f"{feedback_db}: {len(bad)} events refer to items outside {src} (another dataset?)")
    if len(new_users):
        ds.users = pd.concat([ds.users, new_users], ignore_index=True)
        ds.meta.n_users = int(len(ds.users))
    # a refreshed rating replaces the old value of the same (user, item)
    inter = pd.concat([ds.interactions, new], ignore_index=True).drop_duplicates(["user_idx", "item_idx"], keep="last")
    if out.exists():
        shutil.rmtree(out)
    ds.interactions = inter.reset_index(drop=True)
    ds.meta.n_interactions = int(len(inter))
    last_id = int(events["event_id"].max()) if len(events) else since
    ds.meta.extra = {**ds.meta.extra, "refresh": {"from": str(src), "last_event_id": last_id, "new_interactions": int(len(new)),
                                                  "new_users": int(len(new_users))}}
    save_dataset(ds, out, write_meta=False)
    splits = sorted(p.name for p in (src / "splits").iterdir()) if (src / "splits").is_dir() else []
    for name in splits:
        sp = load_split(src, name)
        held_out = pd.concat([sp.valid, sp.test])[["user_idx", "item_idx"]]
        keep = ~new.set_index(["user_idx", "item_idx"]).index.isin(held_out.set_index(["user_idx", "item_idx"]).index)
        sp.train = pd.concat([sp.train, new[keep]], ignore_index=True).drop_duplicates(["user_idx", "item_idx"], keep="last")
        save_split(sp, out)
    for f in ("item_text_emb.npy",):
        if (src / f).exists():
            shutil.copy2(src / f, out / f)
    ds.meta.save(out / "meta.json")  # last: the directory is complete
    summary = {"events": int(len(events)), "new_interactions": int(len(new)), "new_users": int(len(new_users)),
               "dropped": dropped_events(events, len(new), mapping.get("dwell_click_s", 30.0)),
               "negatives_kept": int((new["value"] <= NEGATIVE_VALUE).sum()),
               "last_event_id": last_id, "out_dir": str(out), "splits": splits}
    log.info("refresh: %s", summary)
    return summary


def refreshed_dataset(dataset_dir: str | Path, name: str | None = None, split: dict | None = None) -> Path:
    """The data config's target for a refreshed directory (``configs/data/refreshed.yaml``): check, return it.

    A refreshed dataset is already prepared (tables, splits, ``meta.json`` last); preparing it again
    from the raw files would drop the feedback, so this only checks that the directory is complete and
    was written by :func:`refresh_dataset`. ``name`` and ``split`` are read by the training entry point
    (``cfg.data.name`` names the run, ``cfg.data.split.name`` the split).
    """
    from recsys.data.schema import DatasetMeta

    path = Path(dataset_dir)
    if not (path / "meta.json").exists():
        raise DataError(f"{path}: no meta.json; write it with `python -m recsys.serve.refresh --out-dir {path} ...`")
    meta = DatasetMeta.load(path / "meta.json")
    if "refresh" not in meta.extra:
        raise DataError(f"{path}: not a refreshed dataset (meta.extra has no 'refresh'); use data=<name> for raw data")
    wanted = (split or {}).get("name")
    if wanted and not (path / "splits" / wanted).is_dir():
        raise DataError(f"{path}: split {wanted!r} not found")
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Turn served feedback into training data and refresh the models.")
    ap.add_argument("--dataset-dir", required=True)
    ap.add_argument("--feedback-db", required=True)
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--retrain", default=None,
                    help='training command run after the refresh, e.g. "python -m recsys.train experiment=ml100k/bpr '
                         'data=refreshed data.dataset_dir=<out-dir>" (split into arguments; no shell)')
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    summary = refresh_dataset(args.dataset_dir, args.feedback_db, args.out_dir)
    if args.retrain:
        cmd = shlex.split(args.retrain)
        if cmd and cmd[0] == "python":  # the interpreter running this job, not whatever "python" is on PATH
            import sys

            cmd[0] = sys.executable
        subprocess.run(cmd, check=True)
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
