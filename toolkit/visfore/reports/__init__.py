"""HTML and text reports (robustness, model comparison)."""
