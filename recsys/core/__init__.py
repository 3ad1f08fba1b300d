"""Below everything: the request and candidate types, the source/stage/scorer interfaces, and
constructor-name injection. ``core`` imports nothing else of ``recsys`` at module level."""
