"""Build hook: compile the Diameter codec hot path with mypyc when possible.

The modules stay plain, strictly typed Python; mypyc turns them into C extensions for speed
(see docs/benchmarks.md). Set OCS_PURE_PYTHON=1 to skip compilation (the code then runs as
ordinary Python with identical behaviour, only slower).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

DEMO_CATALOG = Path("policies") / "demo"  # shipped as ocs/demo_catalog (ocs.config.demo_catalog)

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


class BuildWithDemo(build_py):
    """Also copy the demo catalogue into the built package, so an installed ``ocs demo``
    finds it wherever it runs (an editable install reads policies/demo in place)."""

    def run(self) -> None:
        super().run()
        if DEMO_CATALOG.is_dir():
            target = Path(self.build_lib) / "ocs" / "demo_catalog"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(DEMO_CATALOG, target)


setup(ext_modules=ext_modules(), cmdclass={"build_py": BuildWithDemo})
