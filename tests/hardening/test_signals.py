"""Issue 16: SIGTERM during a write leaves neither a partial output nor temporary files, like Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_convert_leaves_nothing_behind(sig: int, keras_file: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen([sys.executable, "-m", "tfshrink", "convert", str(keras_file), "-o",
                             str(out_dir / "m.tflite"), "--quantize", "int8", "--calibration", "random",
                             "--calibration-samples", "500"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmp.glob("tfshrink-convert-*")) and proc.poll() is None:
        time.sleep(0.02)  # wait until the conversion has its temporary folder
    if proc.poll() is not None:
        pytest.skip("the conversion finished before the signal could be sent")
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == (143 if sig == signal.SIGTERM else 130), err
    assert not list(out_dir.iterdir()), list(out_dir.iterdir())
    assert not list(tmp.glob("tfshrink-*")), list(tmp.iterdir())
