"""The C accelerator of proxy.assemble; everything else is in pyproject.toml.

``optional``: where it cannot be built (no compiler, no Python headers) the install goes on
and proxy.assemble runs its pure-Python loop.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("proxy._fold_scan", ["proxy/_fold_scan.c"], optional=True)])
