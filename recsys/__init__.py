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


def _drop_is_fx_tracing_notice() -> None:
    """Drop torch's one-line ``is_fx_tracing`` notice, and only that line.

    torchrec's KeyedJaggedTensor code calls ``torch.fx.is_fx_tracing()`` on
    every forward; torch 2.13 answers with a once-per-process warning meant
    for the caller's authors (use ``is_fx_tracing_symbolic_tracing``), not for
    a user of this project, and it landed in the middle of every training log.
    A filter on that exact message (not a level on the logger) keeps every
    other warning of ``torch.fx._symbolic_trace`` visible.
    """
    import logging

    def keep(record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("is_fx_tracing will return true")

    logging.getLogger("torch.fx._symbolic_trace").addFilter(keep)


_drop_is_fx_tracing_notice()
