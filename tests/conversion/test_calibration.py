"""Calibration data: image folders and globs (empty, corrupt, odd-sized), arrays, random."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tfshrink.data.calibration import RANDOM_WARNING, InputSpec, load_calibration
from tfshrink.errors import UserError
from tfshrink.tflite.preprocess import parse_preprocess

IMAGE = [InputSpec("image", "float32", (1, 8, 8, 3))]


def _spec():
    return parse_preprocess("mean=127.5,std=127.5").resolve("image", (1, 8, 8, 3))


def _png(path: Path, size: tuple[int, int] = (8, 8), value: int = 100) -> Path:
    from PIL import Image

    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


def test_empty_folder_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(UserError) as exc:
        load_calibration(tmp_path, IMAGE, preprocess=_spec())
    assert "holds no JPEG or PNG images" in exc.value.one_line()


def test_corrupt_images_are_skipped_and_counted_odd_sizes_resized(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    _png(tmp_path / "b.png", size=(20, 13), value=255)  # odd size: resized
    (tmp_path / "c.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated jpeg")
    (tmp_path / "d.png").write_bytes(b"definitely not a png")
    calib = load_calibration(tmp_path, IMAGE, preprocess=_spec())
    assert calib.kind == "images" and calib.candidates == 4
    assert len(calib.samples) == 2 and calib.resized == 1
    assert [s.split(":")[0] for s in calib.skipped] == ["c.jpg", "d.png"]
    assert any("skipped 2 unreadable" in w for w in calib.warnings)
    first = calib.samples[0]["image"]
    assert first.shape == (1, 8, 8, 3) and first.dtype == np.float32
    np.testing.assert_allclose(first, (100 - 127.5) / 127.5)
    np.testing.assert_allclose(calib.samples[1]["image"], 1.0)
    assert "2 unreadable skipped" in calib.summary() and "1 resized" in calib.summary()


def test_only_corrupt_images_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(UserError) as exc:
        load_calibration(tmp_path, IMAGE, preprocess=_spec())
    assert "none of the 1 images is usable" in exc.value.one_line()


def test_images_need_a_preprocess_spec(tmp_path: Path) -> None:
    _png(tmp_path / "a.png")
    with pytest.raises(UserError) as exc:
        load_calibration(tmp_path, IMAGE, preprocess=None)
    assert "--preprocess" in exc.value.one_line()


def test_glob_sorted_and_limited(tmp_path: Path) -> None:
    for i in range(5):
        _png(tmp_path / f"img_{4 - i}.png", value=i * 10)
    calib = load_calibration(str(tmp_path / "img_*.png"), IMAGE, samples=3, preprocess=_spec())
    assert len(calib.samples) == 3
    # sorted by name: img_0 (value 40), img_1 (30), img_2 (20)
    np.testing.assert_allclose(calib.samples[0]["image"][0, 0, 0, 0], (40 - 127.5) / 127.5)
    with pytest.raises(UserError):
        load_calibration(str(tmp_path / "nothing_*.png"), IMAGE, preprocess=_spec())


def test_arrays_keyed_by_input_name_and_split_into_samples(tmp_path: Path) -> None:
    specs = [InputSpec("a", "float32", (1, 4)), InputSpec("b", "float32", (1, 2))]
    np.savez(tmp_path / "c.npz", **{"a:0": np.ones((6, 4)), "b": np.zeros((6, 2))})
    calib = load_calibration(tmp_path / "c.npz", specs, samples=5)
    assert len(calib.samples) == 5 and calib.samples[0]["a"].shape == (1, 4)
    assert calib.samples[0]["a"].dtype == np.float32
    np.save(tmp_path / "one.npy", np.ones((3, 8, 8, 3), np.float32))
    assert len(load_calibration(tmp_path / "one.npy", IMAGE).samples) == 3


def test_array_errors(tmp_path: Path) -> None:
    np.savez(tmp_path / "bad.npz", image=np.ones((3, 5, 5, 3)))
    with pytest.raises(UserError) as exc:
        load_calibration(tmp_path / "bad.npz", IMAGE)
    assert "shape [3, 5, 5, 3]" in exc.value.one_line()
    specs = [InputSpec("a", "float32", (1, 4)), InputSpec("b", "float32", (1, 2))]
    np.savez(tmp_path / "missing.npz", a=np.ones((2, 4)), c=np.ones((2, 2)))
    with pytest.raises(UserError) as exc:
        load_calibration(tmp_path / "missing.npz", specs)
    assert "no calibration array for input 'b'" in exc.value.one_line()
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(UserError):
        load_calibration(tmp_path / "junk.npz", IMAGE)
    with pytest.raises(UserError) as exc:
        load_calibration(tmp_path / "nope", IMAGE)
    assert "no such calibration file or folder" in exc.value.one_line()


def test_uint8_arrays_are_normalized_per_preprocess(tmp_path: Path) -> None:
    np.savez(tmp_path / "px.npz", image=np.full((2, 8, 8, 3), 255, np.uint8))
    calib = load_calibration(tmp_path / "px.npz", IMAGE, preprocess=_spec())
    np.testing.assert_allclose(calib.samples[0]["image"], 1.0)
    raw = load_calibration(tmp_path / "px.npz", IMAGE)
    assert any("uint8" in w for w in raw.warnings)


def test_random_warns_and_is_seeded() -> None:
    a = load_calibration("random", IMAGE, samples=4)
    b = load_calibration("random", IMAGE, samples=4)
    assert a.warnings == [RANDOM_WARNING]
    np.testing.assert_array_equal(a.samples[3]["image"], b.samples[3]["image"])
    assert a.samples[0]["image"].min() >= -1 and a.samples[0]["image"].max() <= 1
    pixels = load_calibration("random", IMAGE, samples=1, preprocess=_spec()).samples[0]["image"]
    assert pixels.min() >= -1 and pixels.max() <= 1
