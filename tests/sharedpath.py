"""Where ../shared is: beside the checkout, or wherever $HEPWATCH_SHARED points.

The vectors and the Kamailio testbed live there, not in the project; tests that need
them skip with the reason when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path


def shared_path(*parts: str) -> Path | None:
    """A folder under shared/ (shared/ itself without parts); None where it is absent."""
    env = os.environ.get("HEPWATCH_SHARED")
    root = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    path = root.joinpath(*parts)
    return path if path.is_dir() else None
