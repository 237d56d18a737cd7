"""Process settings for long-running analysis: garbage-collector thresholds.

The engine keeps hundreds of thousands of small long-lived objects (calls, dialogs); with
the default thresholds the collector rescans them all every few thousand allocations,
which cost 40% of the consumer's time (bench/consumer). Reference counting frees almost
everything here; the cycle collector only has to run now and then.
"""

from __future__ import annotations

import gc


def tune_gc() -> None:
    gc.collect()
    gc.freeze()  # what exists at start-up (modules, tables) is never scanned again
    gc.set_threshold(100_000, 50, 100)
