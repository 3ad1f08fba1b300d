"""Config composition for the ranking tests: the real configs through Hydra's compose API."""

from __future__ import annotations

from pathlib import Path

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def compose_config(name: str, overrides: list[str] = (), output_dir: str | Path | None = None):
    """Compose ``configs/<name>.yaml``; ``output_dir`` fills ``paths.output_dir`` (Hydra's runtime dir otherwise)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(name, overrides=list(overrides))
    if output_dir is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(output_dir)
    return cfg
