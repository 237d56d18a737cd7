"""Only the optional C extensions; everything else is configured in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
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
)
