"""The npm ``asl-validator``, installed on first use into a cache outside the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ray-operator" / "npm"
BIN = CACHE / "node_modules" / ".bin" / "asl-validator"


def asl_validator() -> Path:
    """Path of the asl-validator binary; installs it with npm when missing."""
    if BIN.exists():
        return BIN
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("npm is needed to install asl-validator (apt-get install npm)")
    CACHE.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), "asl-validator@^4"],
        capture_output=True, text=True, timeout=240,
    )
    if done.returncode != 0 or not BIN.exists():
        pytest.fail(f"npm install asl-validator failed: {done.stderr[-2000:]}")
    return BIN


def validate(definition: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run asl-validator on ``definition``; the result's returncode is 0 when valid."""
    path = tmp_path / "definition.json"
    path.write_text(json.dumps(definition))
    return subprocess.run(
        [str(asl_validator()), "--json-path", str(path)], capture_output=True, text=True, timeout=60
    )
