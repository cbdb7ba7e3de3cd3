"""Acceptance (issue 17): int8 calibration from a sharded TFRecord set of 10,000 real-image
samples (scikit-image's photos and LFW faces, cut into deterministic 64x64 crops, JPEG) runs with
a peak RSS no more than 1.2x that of 500 samples from the same set.

Each conversion runs in its own Python process and its peak RSS is that child's ru_maxrss (read
with os.wait4, so no other child counts). Loaded whole, the 10,000 samples would add ~490 MB of
float32 (with the crops as an .npz, measured 2.9x the 500-sample peak); streamed, the peak stays
where TensorFlow's own footprint puts it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.data.real_images import small_cnn, write_tfrecords

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT = 600
CHILD = """
import json, resource, sys
import tfshrink
result = tfshrink.convert(sys.argv[1], sys.argv[2], quantize="int8", calibration=sys.argv[3],
                          calibration_samples=int(sys.argv[4]), preprocess="mean=127.5,std=127.5")
print(json.dumps({"summary": result.calibration.summary(), "samples": len(result.calibration.samples),
                  "warnings": list(result.warnings)}))
"""


@pytest.mark.slow
def test_peak_rss_of_10000_streamed_samples_is_within_1_2x_of_500(tmp_path: Path) -> None:
    calibration = write_tfrecords(tmp_path / "crops", 10_000, shards=10)
    model = small_cnn(tmp_path / "cnn.keras")
    small, small_rss = _run(model, tmp_path / "500.tflite", calibration, 500)
    large, large_rss = _run(model, tmp_path / "10000.tflite", calibration, 10_000)
    print(f"\npeak RSS: 500 samples {small_rss:.0f} MiB, 10,000 samples {large_rss:.0f} MiB "
          f"({large_rss / small_rss:.3f}x)")
    # held out to check the result: every 5th sample, at most 100 (tfshrink.conversion.heldout)
    assert small["samples"] == 400 and large["samples"] == 9_900
    assert "streamed from" in large["summary"] and "10 file(s)" in large["summary"]
    assert large_rss <= 1.2 * small_rss


def _run(model: Path, output: Path, calibration: Path, samples: int) -> tuple[dict, float]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": os.pathsep.join(
        [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH", "")])}
    with open(output.with_suffix(".out"), "w+b") as out, open(output.with_suffix(".err"), "w+b") as err:
        child = subprocess.Popen([sys.executable, "-c", CHILD, str(model), str(output), str(calibration),
                                  str(samples)], stdout=out, stderr=err, env=env, cwd=ROOT)
        deadline = time.monotonic() + TIMEOUT
        while True:  # wait4, not wait: this child's own rusage
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                child.kill()
                os.wait4(child.pid, 0)
                raise AssertionError(f"converting {samples} samples took over {TIMEOUT} s")
            time.sleep(0.2)
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    assert child.returncode == 0, stderr[-3000:]
    return json.loads(stdout.strip().splitlines()[-1]), usage.ru_maxrss / 1024  # Linux: KiB
