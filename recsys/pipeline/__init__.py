"""The multi-stage recommender: stages composed from config."""
