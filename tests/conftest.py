"""Session fixtures: real checkpoints, Keras models, SavedModels and TFLite files built once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from tests import builders  # noqa: E402


@pytest.fixture(scope="session")
def onet_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """MTCNN ONet with the mtcnn package's real weights, as a TF1 checkpoint folder."""
    from tfshrink.zoo.mtcnn import save_onet_checkpoint

    directory = tmp_path_factory.mktemp("onet_ckpt")
    save_onet_checkpoint(directory)
    return directory


@pytest.fixture(scope="session")
def train_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The training checkpoint of acceptance (b); returns the checkpoint prefix."""
    return builders.save_training_checkpoint(tmp_path_factory.mktemp("train_ckpt"))


@pytest.fixture(scope="session")
def keras_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builders.small_keras_model(tmp_path_factory.mktemp("keras") / "two_io.keras")


@pytest.fixture(scope="session")
def h5_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return builders.small_keras_model(tmp_path_factory.mktemp("h5") / "two_io.h5")


@pytest.fixture(scope="session")
def saved_model_dir(tmp_path_factory: pytest.TempPathFactory, keras_file: Path) -> Path:
    from tfshrink import _tf

    model = _tf.tf().keras.models.load_model(keras_file)
    out = tmp_path_factory.mktemp("savedmodel") / "sm"
    model.export(str(out), verbose=False)
    return out


@pytest.fixture(scope="session")
def tflite_file(tmp_path_factory: pytest.TempPathFactory, keras_file: Path) -> Path:
    from tfshrink import _tf

    tf = _tf.tf()
    model = tf.keras.models.load_model(keras_file)
    data = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    out = tmp_path_factory.mktemp("tflite") / "two_io.tflite"
    out.write_bytes(data)
    return out
