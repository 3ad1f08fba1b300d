"""The one marker of a user's error: bad input, a missing or mismatched artifact, options that do
not go together. Each part raises its own subclass (``DataError``, ``ProvenanceError``,
``UsageError``); the entry points print any of them as one line (``recsys.utils.cli``)."""


class UserError(Exception):
    """Something the user can fix; the message says how."""
