"""The preprocessing SPEC: parsing, checking it against the model input, the raw-pixel map."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfshrink.errors import UserError
from tfshrink.tflite.preprocess import Preprocess, parse_preprocess


def test_parses_the_full_spec() -> None:
    p = parse_preprocess("size=224x160,mean=127.5,std=127.5,color=rgb")
    assert p == Preprocess(size=(224, 160), mean=(127.5,), std=(127.5,), color="rgb")
    assert p.spec() == "size=224x160,mean=127.5,std=127.5,color=rgb"
    assert parse_preprocess(p.spec()) == p


def test_per_channel_mean_and_std_and_defaults() -> None:
    p = parse_preprocess("mean=123.7/116.3/103.5,std=58.4/57.1/57.4,color=BGR")
    assert p.mean == (123.7, 116.3, 103.5) and p.std == (58.4, 57.1, 57.4) and p.color == "bgr"
    assert p.size is None
    q = parse_preprocess("size=8x8")
    assert q.mean == (0.0,) and q.std == (1.0,) and q.color is None


@pytest.mark.parametrize("spec, words", [
    ("size=224", "WIDTHxHEIGHT"),
    ("size=0x10", "sides"),
    ("mean=abc", "not a number"),
    ("std=0", "must not be 0"),
    ("color=hsv", "rgb, bgr, gray"),
    ("mean=1/2,color=rgb", "one per channel"),
    ("mean=1/2/3,color=gray", "one per channel"),
    ("scale=2", "no key 'scale'"),
    ("mean=1,mean=2", "twice"),
    ("mean", "KEY=VALUE"),
    ("", "empty"),
])
def test_bad_specs_say_what_is_wrong(spec: str, words: str) -> None:
    with pytest.raises(UserError) as exc:
        parse_preprocess(spec)
    assert words in exc.value.one_line()
    assert "--preprocess" in exc.value.one_line()


def test_resolve_fills_size_and_color_from_the_input() -> None:
    p = parse_preprocess("mean=0,std=255").resolve("image", (1, 8, 6, 1))
    assert p.size == (6, 8) and p.color == "gray" and p.input == "image"
    assert parse_preprocess("std=2").resolve("x", (1, 4, 4, 3)).color == "rgb"


@pytest.mark.parametrize("spec, shape, words", [
    ("size=10x10", (1, 8, 8, 3), "does not match"),
    ("color=gray", (1, 8, 8, 3), "3"),
    ("color=rgb", (1, 8, 8, 1), "1"),
    ("mean=1", (1, 10), "NHWC"),
])
def test_resolve_refuses_a_spec_the_input_contradicts(spec: str, shape: tuple, words: str) -> None:
    with pytest.raises(UserError) as exc:
        parse_preprocess(spec).resolve("image", shape)
    assert words in exc.value.one_line()


def test_normalize_per_channel_and_bgr_order(tmp_path) -> None:
    from PIL import Image

    pixels = np.zeros((4, 6, 3), np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 200, 100, 50  # R, G, B
    Image.fromarray(pixels).save(tmp_path / "a.png")
    p = parse_preprocess("mean=10/20/30,std=2/4/5,color=bgr").resolve("x", (1, 4, 6, 3))
    x, resized = p.load_image(tmp_path / "a.png")
    assert not resized and x.shape == (4, 6, 3)
    np.testing.assert_allclose(x[0, 0], [(50 - 10) / 2, (100 - 20) / 4, (200 - 30) / 5])
    small = p.resolve("x", (1, 4, 6, 3))
    Image.fromarray(pixels[:2, :3]).save(tmp_path / "b.png")
    y, resized = small.load_image(tmp_path / "b.png")
    assert resized and y.shape == (4, 6, 3)


def test_quantized_input_pixel_map() -> None:
    """q = round(pixel * pixel_scale + pixel_offset) equals quantizing (pixel - mean) / std."""
    p = parse_preprocess("mean=127.5,std=127.5").resolve("x", (1, 2, 2, 3)).with_quantization("int8", 2 / 255, -1)
    q = p.quantization
    assert q is not None and q.scale == pytest.approx(2 / 255) and q.zero_point == -1
    pixels = np.arange(256, dtype=np.float64)
    direct = np.round(((pixels - 127.5) / 127.5) / (2 / 255) - 1)
    mapped = np.round(pixels * q.pixel_scale[0] + q.pixel_offset[0])
    np.testing.assert_array_equal(direct, mapped)
    assert q.pixel_scale[0] == pytest.approx(1.0)  # raw pixels feed this input almost as they are


def test_json_round_trip_is_deterministic() -> None:
    p = parse_preprocess("size=8x8,mean=1/2/3,std=4,color=rgb").resolve("img", (1, 8, 8, 3))
    p = p.with_quantization("uint8", 0.5, 3)
    data = p.metadata_bytes()
    assert data == p.metadata_bytes()
    back = Preprocess.from_json(json.loads(data))
    assert back == p
