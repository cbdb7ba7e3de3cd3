"""Issue 16: corrupted model, feeds and recipe files through the commands that read them. Every run
ends in exit 0 (the damage missed anything that matters) or a clean exit 2, never an "unexpected"
error, and the input file is never changed. hypothesis, derandomized: the same cases every run."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_real_world import run_cli

SETTINGS = settings(max_examples=40, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@st.composite
def damage(draw: st.DrawFn, data: bytes) -> bytes:
    """Truncate, flip bytes in, or splice garbage into `data`."""
    kind = draw(st.sampled_from(["truncate", "flip", "splice"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data) - 1))]
    out = bytearray(data)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(out) - 1))
            out[i] ^= draw(st.integers(1, 255))
        return bytes(out)
    i = draw(st.integers(0, len(out)))
    return bytes(out[:i]) + draw(st.binary(min_size=1, max_size=64)) + bytes(out[i:])


def _check(capsys: pytest.CaptureFixture[str], path: Path, *command: object) -> None:
    before = path.read_bytes()
    code, _, err = run_cli(capsys, *command)
    assert code in (0, 2), (code, err)
    assert "unexpected" not in err, err
    assert path.read_bytes() == before


def _cases(source: Path) -> st.SearchStrategy[bytes]:
    return damage(source.read_bytes())


@pytest.fixture(scope="module")
def originals(keras_pb: Path, tflite_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    import numpy as np

    folder = tmp_path_factory.mktemp("fuzz_originals")
    np.savez(folder / "feeds.npz", image=np.ones((1, 12, 12, 3), np.float32), meta=np.ones((1, 4), np.float32))
    return {"pb": keras_pb.read_bytes(), "tflite": tflite_file.read_bytes(),
            "npz": (folder / "feeds.npz").read_bytes()}


@pytest.mark.parametrize("kind", ["pb", "tflite"])
def test_corrupted_models(kind: str, originals: dict[str, bytes], tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    @SETTINGS
    @given(damage(originals[kind]))
    def run(data: bytes) -> None:
        path = tmp_path / f"m.{kind}"
        path.write_bytes(data)
        _check(capsys, path, "inspect", path)
        _check(capsys, path, "bench", path, "--runs", "1", "--warmup", "0")

    run()


def test_corrupted_feeds(originals: dict[str, bytes], keras_pb: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    @SETTINGS
    @given(damage(originals["npz"]))
    def run(data: bytes) -> None:
        path = tmp_path / "feeds.npz"
        path.write_bytes(data)
        _check(capsys, path, "verify", keras_pb, keras_pb, "--inputs", path)

    run()


def test_corrupted_recipes(keras_pb: Path, tflite_file: Path, tmp_path: Path,
                           capsys: pytest.CaptureFixture[str]) -> None:
    text = (f'out = "out"\n[[step]]\nkind = "verify"\nname = "check"\na = "{keras_pb}"\nb = "{tflite_file}"\n'
            'samples = 1\n').encode()

    @SETTINGS
    @given(damage(text))
    def run(data: bytes) -> None:
        path = tmp_path / "r.toml"
        path.write_bytes(data)
        _check(capsys, path, "run", path)

    run()
