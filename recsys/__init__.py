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


# Library notices that are for their callers' authors, not for a user of this project: (logger, the
# message's exact start). Each sat in every training log; a filter on the exact message (not a level on
# the logger) keeps everything else those loggers say visible. tests/test_package_logging.py checks that
# each library still words its notice so (a reworded one would show again, and the entry would be stale).
NOTICES = (
    # torchrec's KeyedJaggedTensor calls torch.fx.is_fx_tracing() on every forward; torch 2.13 answers once
    # per process that the caller should use is_fx_tracing_symbolic_tracing
    ("torch.fx._symbolic_trace", "is_fx_tracing will return true"),
    # fbgemm_gpu logs each of its 14 shared libraries on the root logger when torchrec first imports it
    ("root", "Successfully loaded: 'fbgemm_gpu"),
    # Lightning advertises its cloud logger on every Trainer
    ("pytorch_lightning.utilities.rank_zero", "\N{ELECTRIC LIGHT BULB} Tip: For seamless cloud logging"),
)


def _drop_library_notices() -> None:
    import logging

    for name, start in NOTICES:
        logging.getLogger(None if name == "root" else name).addFilter(
            lambda record, start=start: not str(record.msg).startswith(start))


_drop_library_notices()
