"""recsys: multi-stage recommender systems with LLMs.

Sub-packages by role: ``data`` (canonical tables, readers, splits), ``eval``
(metrics and protocols), ``models`` (nn.Modules and LightningModules),
``retrieval`` (FAISS index, candidate sources), ``ranking`` (ranker features
and training data), ``llm`` (backends, re-ranking, explanations,
conversation), ``pipeline`` (stages composed from config), ``serve`` (HTTP
service and feedback store). Entry points: ``recsys.train``,
``recsys.evaluate``, ``recsys.index``, ``recsys.recommend``, ``recsys.serve``.
"""

__version__ = "0.1.0"
