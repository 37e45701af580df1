"""ferkit's version, in a leaf module: the CLI, exports and the server read it from here, so no
module below the package's __init__ has to import it (and __init__ stays free to import them)."""

__version__ = "0.1.0"  # also pyproject.toml's [project] version (tests/test_project.py)
