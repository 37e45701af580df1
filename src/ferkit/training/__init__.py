"""ferkit training."""
