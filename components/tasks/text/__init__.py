"""The pieces of the text-classification task (tokenising, checks, descriptors, perturbations, floor, schema)."""
