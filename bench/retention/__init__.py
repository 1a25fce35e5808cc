"""`python -m bench.retention`: what the retention sweep costs SubmitFeedback, in one run."""
