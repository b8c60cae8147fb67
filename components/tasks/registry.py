"""Which task object a ``PipelineConfig.task`` name selects. Registering a task is one entry here."""

from __future__ import annotations

import functools

from tuneops.components.errors import ConfigError
from tuneops.components.tasks.base import Task


@functools.cache
def get_task(name: str) -> Task:
    """The task for ``name`` (one shared, stateless instance per name)."""
    if name == "text-classification":
        from tuneops.components.tasks.text_classification import TextClassification

        return TextClassification()
    if name == "image-classification":
        from tuneops.components.tasks.image_classification import ImageClassification

        return ImageClassification()
    raise ConfigError(f"config: unknown task {name!r}; known tasks: text-classification, image-classification")
