"""Tracking: the stages' MLflow runs and the model registry."""
