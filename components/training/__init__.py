"""Training stage: the fine-tuning engine (single process and data-parallel)."""
