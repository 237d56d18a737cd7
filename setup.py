"""Only the optional C extension; everything else is configured in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "collector.hep._speedups",
            ["collector/hep/_speedups.c"],
            optional=True,  # no compiler: install anyway, the pure Python path is used
            extra_compile_args=["-O2"],
        )
    ]
)
