"""Evaluation stage: metrics, slices, fairness, behaviour, drift and the promotion gate."""
