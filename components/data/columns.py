"""Canonical column names of the split frames, shared by every stage and every task.

A task names its own input column (``text`` for text, ``image`` for images: ``Task.input_column``);
the label column and the split names are the same for all of them.
"""

LABEL = "label"
SPLITS = ("train", "validation", "test")
