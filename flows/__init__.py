"""Prefect flows and the tuneops CLI: they only wire the components."""
