"""Cross-leg checks of PROTOCOL.md C.12 (SBC/B2BUA converting or stripping UPDATE).

`summary` builds the per-leg facts (`LegRecord`, first stage); `correlator` links legs by
leg-correlation key (B.13) and compares them (second keyed stage).
"""

from consumers.legs.correlator import (
    HEURISTIC,
    KEY_TYPES,
    LegCorrelator,
    LegCorrelatorConfig,
    LegCorrelatorStats,
    correlate,
)

__all__ = [
    "HEURISTIC",
    "KEY_TYPES",
    "LegCorrelator",
    "LegCorrelatorConfig",
    "LegCorrelatorStats",
    "correlate",
]
