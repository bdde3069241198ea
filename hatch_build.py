"""Wheel build hook: compile the exploration engine's hot loop with mypyc.

``dpor.py``, ``execution.py`` and ``snapshot.py`` are plain, ``mypy --strict``
Python; mypyc turns them into a C extension that runs the search about 1.5x faster.  The wheel keeps
the ``.py`` files, so when no C compiler is at hand (or ``PTLAB_PURE_PYTHON=1``)
the build says so and ships the pure-Python engine, which behaves the same.
Editable installs are never compiled: an extension module beside its source would
shadow every edit to it.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

COMPILED = ("ptlab/engine/dpor.py", "ptlab/engine/execution.py",
            "ptlab/engine/snapshot.py")


class CustomBuildHook(BuildHookInterface):  # type: ignore[type-arg]
    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if self.target_name != "wheel" or version != "standard":
            return
        if os.environ.get("PTLAB_PURE_PYTHON") == "1":
            self.app.display_info("ptlab: PTLAB_PURE_PYTHON=1, building the pure-Python engine")
            return
        self._tmp = tempfile.mkdtemp(prefix="ptlab-mypyc-")
        try:
            built = self._compile(Path(self._tmp))
        except (Exception, SystemExit) as e:  # no compiler or headers, mypyc refused (it exits)
            self.app.display_warning(f"ptlab: mypyc build failed ({type(e).__name__}: {e}); "
                                     "building the pure-Python engine")
            return
        build_data["pure_python"] = False
        build_data["infer_tag"] = True
        for path, dest in built:
            build_data["force_include"][str(path)] = dest
        self.app.display_info("ptlab: engine compiled with mypyc: " + ", ".join(COMPILED))

    def finalize(self, version: str, build_data: dict[str, Any], artifact: str) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)

    def _compile(self, tmp: Path) -> list[tuple[Path, str]]:
        from mypyc.build import mypycify
        from setuptools import Distribution

        src = Path(self.root) / "src"
        cwd = os.getcwd()
        os.chdir(src)
        argv = sys.argv
        try:
            exts = mypycify(list(COMPILED), opt_level="3", target_dir=str(tmp / "c"))
            dist = Distribution({"name": "ptlab-engine", "ext_modules": exts})
            cmd = dist.get_command_obj("build_ext")
            cmd.build_lib = str(tmp / "lib")  # type: ignore[attr-defined]
            cmd.build_temp = str(tmp / "obj")  # type: ignore[attr-defined]
            sys.argv = ["setup.py", "build_ext"]
            cmd.ensure_finalized()
            cmd.run()
        finally:
            sys.argv = argv
            os.chdir(cwd)
        lib = tmp / "lib"
        out = [(p, p.relative_to(lib).as_posix()) for p in sorted(lib.rglob("*.so"))]
        if len(out) < len(COMPILED):
            raise RuntimeError(f"expected {len(COMPILED)} extension modules, got {len(out)}")
        return out
