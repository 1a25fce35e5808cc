"""`make bench-watch`: 2,000 watchers with mixed filters while SubmitFeedback runs at c=64."""
