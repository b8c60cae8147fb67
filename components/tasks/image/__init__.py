"""The pieces of the image classification task: decoding, checks, preprocessing, the floor,
descriptors, behaviour and the request schema. ``IMAGE`` is the task's canonical input column."""

IMAGE = "image"
