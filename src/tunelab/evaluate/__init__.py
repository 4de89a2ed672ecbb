"""Evaluation: pure metric functions, baselines, paired comparisons, and `run.run()`."""
