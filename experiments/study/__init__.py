"""The large-batch study: plan.py (its runs and CSV), run.py (the driver), report.py."""
