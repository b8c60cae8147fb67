"""Selection stage: pretrained candidates probed on the user's data against the floor."""
