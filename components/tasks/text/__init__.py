"""The pieces of the text-classification task (tokeniser checks, validation checks, descriptors,
perturbations, the TF-IDF floor, the request schema); ``tasks.text_classification`` wires them."""

#: the canonical input column of text splits
TEXT = "text"
