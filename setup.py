"""Build hook: compile the Diameter codec hot path with mypyc when possible.

The modules stay plain, strictly typed Python; mypyc turns them into C extensions for speed
(see docs/benchmarks.md). Set OCS_PURE_PYTHON=1 to skip compilation (the code then runs as
ordinary Python with identical behaviour, only slower).
"""

from __future__ import annotations

import os

from setuptools import setup

COMPILED = [
    "ocs/diameter/codec.py",
    "ocs/diameter/framer.py",
]


def ext_modules() -> list[object]:
    if os.environ.get("OCS_PURE_PYTHON"):
        return []
    try:
        from mypyc.build import mypycify  # noqa: PLC0415 - optional at build time
    except ImportError:
        return []
    return list(mypycify(COMPILED, opt_level="3", separate=True))


setup(ext_modules=ext_modules())
