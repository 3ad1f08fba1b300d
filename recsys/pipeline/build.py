"""The one factory: a composed ``configs/serve.yaml`` (or ``recommend.yaml``) -> a ``Recommender``.

    python -m recsys.serve               build_state(cfg)   -> build_recommender(cfg)
    python -m recsys.recommend           run(cfg)           -> build_recommender(cfg)
    offline evaluation / ablations       compose_serve(...) -> build_recommender(cfg)  (history=test)

Every entry point gets the same object from the same keys:

    dataset_dir, split, history, negative_threshold   the data and what counts as the past
    pipeline   configs/pipeline/<name>.yaml: artifacts, sources, merger and every stage in
               order, LLM stages included (they read the ``llm`` node by interpolation)
    llm        configs/llm/<name>.yaml: the backend (+ LoRA ``adapter``) that is built once here
               and injected as ``backend`` with one ``accounting`` into every stage naming them
"""

from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def build_recommender(cfg, **objects):
    """-> ``Recommender`` over ``cfg.dataset_dir`` with the pipeline ``cfg.pipeline``.

    ``objects`` join the injected ones (tests may pass a backend; a caller may pass trained
    models). The LLM backend and its ``LLMAccounting`` stay reachable as ``rec.llm``.
    """
    from recsys.llm.factory import build_llm
    from recsys.pipeline.recommender import Recommender

    llm = build_llm(cfg.get("llm"), backend=objects.pop("backend", None))
    rec = Recommender(cfg.dataset_dir, cfg.pipeline, split=cfg.get("split"), history=cfg.get("history", "all"),
                      negative_threshold=cfg.get("negative_threshold"),
                      objects={"backend": llm.backend, "accounting": llm.accounting, **objects})
    rec.llm = llm
    rec.info.update(pipeline=cfg.pipeline.get("name", "?"), llm=(cfg.get("llm") or {}).get("name", "none"))
    return rec


def compose_serve(overrides=(), config_name: str = "serve"):
    """Compose ``configs/<config_name>.yaml`` with Hydra's compose API (scripts and tests; no run dir)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose(config_name, overrides=list(overrides))
