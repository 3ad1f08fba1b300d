"""Models: plain nn.Modules / recommenders (``pop``, ``itemknn``, ``bpr``, ``sasrec``, ``two_tower``,
``dlrm``) and their LightningModules (``lit_*``). Every catalogue ranker implements
``score(history) -> (B, N)``; see docs/architecture.md."""
