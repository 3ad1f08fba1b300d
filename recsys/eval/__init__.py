"""Evaluation: ranking metrics, beyond-accuracy metrics, the Evaluator and its Lightning callback."""
