"""torchrec DistributedModelParallel harness: process groups, sharding, fused optimiser, checkpoints.

Submodules import torchrec's distributed pieces inside functions, so importing
this package is cheap and has no side effects.
"""
