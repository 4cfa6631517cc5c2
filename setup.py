"""The C accelerators; everything else is in pyproject.toml.

- ``proxy._fold_scan``: the usual run of chat chunks, for ``proxy.assemble``;
- ``proxy._sse_split``: an event stream split into its events and packed, for ``proxy.prepare``.

``optional``: where they cannot be built (no compiler, no Python headers) the install goes on
and Python does the same work.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("proxy._fold_scan", ["proxy/_fold_scan.c"], optional=True),
        Extension("proxy._sse_split", ["proxy/_sse_split.c"], optional=True),
    ]
)
