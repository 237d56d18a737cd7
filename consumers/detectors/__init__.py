"""Detectors of PROTOCOL.md C.1 to C.14, one module per family, each citing its RFC sections.

Every module of this package that defines `DETECTOR` (a `Detector` subclass) is a detector;
`default_detectors()` returns a fresh instance of each, ordered by catalogue family.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

from consumers.detectors.base import Detector, Output


def _family_order(det: type[Detector]) -> tuple[int, str]:
    family = det.family.removeprefix("C.")
    return (int(family) if family.isdigit() else 99, det.name)


def detector_classes() -> list[type[Detector]]:
    found: list[type[Detector]] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        cls = getattr(module, "DETECTOR", None)
        if cls is not None:
            found.append(cls)
    return sorted(found, key=_family_order)


def default_detectors(t1_ms: int = 500) -> list[Detector]:
    """One of each detector; those with RFC 3261 timers get the configured T1."""
    out: list[Detector] = []
    for cls in detector_classes():
        takes_t1 = "t1_ms" in inspect.signature(cls).parameters
        out.append(cls(t1_ms=t1_ms) if takes_t1 else cls())  # type: ignore[call-arg]
    return out


__all__ = ["Detector", "Output", "default_detectors", "detector_classes"]
