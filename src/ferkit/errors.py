"""Errors a user can act on. The CLI prints them as one line (no traceback unless --debug)."""

import unicodedata


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


# Characters a terminal acts on or that hide text: C0/C1 controls (ESC starts the escape
# sequences that retitle a window or rewrite the screen), lone surrogates (undecodable bytes
# of a file name, which would crash the print), line separators and the bidirectional
# overrides that reorder what is shown.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def printable(text: object, keep: str = "") -> str:
    """`text` with every control character escaped (ESC as \\x1b, U+202E as \\u202e), so an
    error quoting a file's name or bytes cannot drive the user's terminal. The one place
    errors are made safe to print: messages that quote file content go through it, and the CLI
    passes every error line through it. `keep`: characters left as they are (e.g. a newline).
    """
    out = []
    for ch in str(text):
        if ch in keep or not (ch in _BIDI or unicodedata.category(ch) in _HIDDEN_CATEGORIES):
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)
