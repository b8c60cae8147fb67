"""Monitoring stage: the prediction log, drift on traffic and the retraining trigger."""
