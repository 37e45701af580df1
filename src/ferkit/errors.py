"""Errors a user can act on. The CLI prints them as one line (no traceback unless --debug)."""


class FerkitError(Exception):
    """Base class: the message names the file and line/entry at fault."""


class DataError(FerkitError):
    """A dataset source is missing, malformed or empty."""


class ModelError(FerkitError):
    """A model name, checkpoint or run directory cannot be used."""


class InputError(FerkitError):
    """An image or video given for prediction cannot be read."""


class ConfigError(FerkitError, ValueError):
    """An option has a value that cannot be used: a usage error (exit code 2, like Typer's)."""
