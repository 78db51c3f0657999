"""The package stays ``mypy --strict`` clean (type hints everywhere: a typo in a rarely run branch is caught before it runs).

mypy and the PyYAML stubs are in the ``test`` extra; the check runs on the whole
package in a subprocess with its cache in a temporary directory.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy not installed")
def test_package_is_mypy_strict_clean(repo_root: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "mypy-cache"), "swarm"],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
