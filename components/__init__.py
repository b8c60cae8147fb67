"""tuneops pipeline steps: plain typed functions and small classes, free of any orchestration framework."""
