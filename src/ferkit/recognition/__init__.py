"""ferkit recognition."""
