"""Validation stage: Great Expectations checks that block bad data before any model work."""
