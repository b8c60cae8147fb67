"""Data stage: loading user data or the embedded demo into canonical splits."""
