"""Secrets never reach ``.hydra/``: a Hydra callback refuses secret-looking overrides before anything is written.

Hydra saves a run's overrides and resolved config (``.hydra/{overrides,config,hydra}.yaml``)
before the task starts, so a refusal inside the task comes too late: the key is already on disk.
``on_run_start`` / ``on_multirun_start`` run first. Secrets come from the environment instead
(``OPENAI_API_KEY`` for ``llm=openai``, ``PGPASSWORD`` or ``~/.pgpass`` for a PostgreSQL store).
The refusal message names the key, never the value. Hydra turns an exception raised by a
callback into a warning and carries on, so the refusal is a ``SystemExit`` (exit status 1).
"""

from __future__ import annotations

import re

from hydra.experimental.callback import Callback

# the last component of an override's key, e.g. llm.backend.api_key
SECRET_KEY = re.compile(r"(^|[._])(api_?key|password|passwd|secret|token|credentials?)$", re.IGNORECASE)
# a URL with a password in its user info: scheme://user:password@host
URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@", re.IGNORECASE)


def secret_overrides(overrides) -> list[str]:
    """The keys of ``overrides`` (``key=value`` strings, ``+``/``++``/``~`` prefixes allowed) that carry a secret."""
    bad = []
    for ov in overrides:
        key, _, value = str(ov).partition("=")
        key = key.lstrip("+~")
        if SECRET_KEY.search(key) or URL_PASSWORD.search(value):
            bad.append(key)
    return bad


class RefuseSecretOverrides(Callback):
    """Registered in ``configs/hydra/default.yaml`` for every entry point."""

    def _check(self, config) -> None:
        bad = secret_overrides(config.hydra.overrides.task)
        if bad:
            raise SystemExit(
                f"refusing the override(s) {', '.join(bad)}: a secret on the command line would be written into the "
                "run's .hydra/ files. Put it in the environment instead (OPENAI_API_KEY for llm=openai, PGPASSWORD or "
                "~/.pgpass for a postgresql:// feedback_db) and leave it out of the command.")

    def on_run_start(self, config, **kwargs) -> None:
        self._check(config)

    def on_multirun_start(self, config, **kwargs) -> None:
        self._check(config)
