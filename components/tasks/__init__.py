"""Task strategies: everything that depends on the modality (text, images, ...)."""
