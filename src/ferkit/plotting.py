"""matplotlib for the files ferkit draws: imported lazily (a heavy import no command pays for
unless it plots), on the Agg backend (files only: no display is ever needed)."""

from __future__ import annotations

from typing import Any


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (unless the caller chose another before)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt
