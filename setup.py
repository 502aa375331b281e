"""setuptools needs a setup.py only to pass ``cffi_modules``; everything else is in
pyproject.toml."""

from setuptools import setup

setup(cffi_modules=["native/build_ffi.py:ffibuilder"])
