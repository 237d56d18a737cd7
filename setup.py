"""The optional compiled parts; everything else is configured in pyproject.toml.

Two kinds, both optional (no compiler: the same code runs interpreted):
- three hand-written C extensions (HEP decode, SIP header scan, ClickHouse columns);
- the sans-I/O hot path (SIP parser, dedup, tracker, engine, detectors, leg summaries)
  compiled by mypyc from its own Python sources: the same modules, typed as they are, run
  about 1.5x faster (BENCHMARKS.md). A compiled module's extension is found before its
  .py, so after editing one of them reinstall (`make test` and `make run` do it when the
  sources change). HEPWATCH_PURE_PYTHON=1 at install time skips this part.
"""

from __future__ import annotations

import os
import shutil
import sysconfig
from pathlib import Path

from setuptools import Extension, setup

HERE = Path(__file__).resolve().parent

# The modules mypyc compiles, as one group (calls between them are direct C calls; a
# compiled caller reading an interpreted object's attributes would be slower, not faster).
COMPILED_DIRS = ("consumers/sip", "consumers/tracking", "consumers/detectors")
COMPILED_FILES = (
    "consumers/engine.py",
    "consumers/dedup.py",
    "consumers/observation.py",
    "consumers/legs/summary.py",
    "consumers/record_ids.py",
    "consumers/records.py",
    "consumers/value.py",
    "consumers/capture.py",
    "collector/capfile.py",
    "collector/hep/model.py",
)


def compiled_sources() -> list[str]:
    files = list(COMPILED_FILES)
    for d in COMPILED_DIRS:
        files += sorted(
            str(p.relative_to(HERE)) for p in (HERE / d).glob("*.py") if p.name != "__init__.py"
        )
    return files


def _hand_written() -> list[Extension]:
    return [
        Extension(
            "collector.hep._speedups",
            ["collector/hep/_speedups.c"],
            optional=True,  # no compiler: install anyway, the pure Python path is used
            extra_compile_args=["-O2"],
        ),
        Extension(
            "consumers.clickhouse._native",
            ["consumers/clickhouse/_native.c"],
            optional=True,  # no compiler: the sink builds Python lists for the driver
            extra_compile_args=["-O2"],
        ),
        Extension(
            "consumers.sip._scan",
            ["consumers/sip/_scan.c"],
            optional=True,  # no compiler: the Python header split is used
            extra_compile_args=["-O2"],
        ),
    ]


def _compiled_core() -> list[Extension]:
    if os.environ.get("HEPWATCH_PURE_PYTHON"):
        return []
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        print(f"hepwatch: no C compiler ({compiler}): the hot path runs interpreted")
        return []
    try:
        from mypyc.build import mypycify
    except ImportError:
        print("hepwatch: mypyc is not installed: the hot path runs interpreted")
        return []
    # The group is all or nothing: the modules share one library, so a failed build must
    # fail the install rather than leave modules that cannot import it.
    return list(mypycify(compiled_sources(), opt_level="3"))


setup(ext_modules=[*_hand_written(), *_compiled_core()])
