"""Retrieval: FAISS item index (``index``), ANN evaluation (``ann_eval``), candidate sources
(``sources``), the merger (``merge``) and the sharded two-tower job (``sharded_two_tower``).

Submodules import faiss / torchrec's distributed pieces inside functions; importing this
package is cheap.
"""
