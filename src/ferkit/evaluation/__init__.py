"""ferkit evaluation."""
