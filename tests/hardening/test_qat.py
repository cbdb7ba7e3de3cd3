"""Issue 16: `tfshrink qat` refuses non-finite data and never leaves a partial or replaced output
when training fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.test_real_world import run_cli
from tfshrink import _tf


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from sklearn.datasets import load_digits

    keras = _tf.tf().keras
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(keras.layers.Rescaling(1.0)(image))
    probs = keras.layers.Dense(10, activation="softmax", name="probs")(keras.layers.Flatten()(h))
    folder = tmp_path_factory.mktemp("qat_hardening")
    model = folder / "digits.keras"
    keras.Model(image, probs).save(model)
    digits = load_digits()
    data = folder / "train.npz"
    np.savez(data, x=(digits.images[:64, ..., None] / 16.0).astype(np.float32), y=digits.target[:64])
    return model, data


def test_nan_training_data_is_refused_before_training(small: tuple[Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    model, data = small
    with np.load(data) as d:
        x, y = d["x"].copy(), d["y"]
    x[3, 0, 0, 0] = np.nan
    bad = tmp_path / "nan.npz"
    np.savez(bad, x=x, y=y)
    out = tmp_path / "q.keras"
    code, _, err = run_cli(capsys, "qat", model, "--data", bad, "--epochs", "1", "-o", out)
    assert code == 2 and "NaN or infinite" in err and not out.exists()


def test_diverged_training_leaves_the_existing_output_untouched(small: tuple[Path, Path], tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    model, data = small
    out = tmp_path / "q.keras"
    out.write_bytes(b"the user's previous model")
    code, _, err = run_cli(capsys, "qat", model, "--data", data, "--epochs", "1", "--lr", "1e30", "-o", out)
    assert code == 2 and "training diverged" in err, err
    assert out.read_bytes() == b"the user's previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.keras"]  # no temporary file left


def test_a_good_run_writes_the_keras_and_tflite_together(small: tuple[Path, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    model, data = small
    out, tfl = tmp_path / "q.keras", tmp_path / "q.tflite"
    code, _, err = run_cli(capsys, "qat", model, "--data", data, "--epochs", "1", "-o", out, "--tflite", tfl)
    assert code == 0, err
    assert out.is_file() and tfl.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["q.keras", "q.tflite"]
