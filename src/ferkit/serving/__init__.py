"""ferkit serving."""
