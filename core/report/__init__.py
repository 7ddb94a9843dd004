"""Training reports: plots and model cards (no torch)."""
