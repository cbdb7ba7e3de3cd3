"""Golden files for what users and scripts read: every command's --help text, and the key sets of
every --json result. A change to either is a change to the interface: regenerate on purpose with
TFSHRINK_REGEN_GOLDEN=1 and review the diff (tests/golden/)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tfshrink.cli import cli, main

GOLDEN = Path(__file__).parent / "golden"
REGEN = os.environ.get("TFSHRINK_REGEN_GOLDEN") == "1"
COMMANDS = ["freeze", "inspect", "verify", "transform", "convert", "tune", "bench", "compare", "run", "report", "view",
            "qat", "demo"]
# Values that are dicts keyed by data (op names, percentiles, metadata names): their keys are not
# part of the interface.
OPAQUE = {"op_types", "ops", "latency_ms", "weight_bytes", "metadata", "defaults", "kept_float", "float_ops",
          "edge_conversions", "dynamic_range_ops", "by_op", "memory", "preprocess", "quantization", "shapes",
          "profile", "flops", "flops_by_op", "options", "artifacts", "outputs_by_name", "figures", "steps_by_name"}


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if REGEN or not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if not REGEN:
            pytest.fail(f"{path} was missing and has been written; review and commit it")
    assert text == path.read_text(), f"{name} changed; if on purpose, rerun with TFSHRINK_REGEN_GOLDEN=1"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_text(command: str | None) -> None:
    args = [command, "--help"] if command else ["--help"]
    result = CliRunner().invoke(cli, args, prog_name="tfshrink", terminal_width=100)
    assert result.exit_code == 0, result.output
    _check(f"help/{command or 'tfshrink'}.txt", result.output)


def key_shape(value: Any, key: str = "") -> Any:
    """The nesting of keys in a JSON value: dicts as {key: shape}, lists by their first element."""
    if isinstance(value, dict):
        if key in OPAQUE:
            return "{...}"
        return {k: key_shape(v, k) for k, v in sorted(value.items())}
    if isinstance(value, list):
        first = next((v for v in value if isinstance(v, dict | list)), None)
        return [key_shape(first, key)] if first is not None else []
    return None


def _json(capsys: pytest.CaptureFixture[str], *argv: Any) -> Any:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv] + ["--json"])
    out = capsys.readouterr()
    assert exc.value.code == 0, out.err
    return json.loads(out.out)


def test_json_keys(keras_file: Path, keras_pb: Path, tflite_file: Path, tmp_path: Path,
                   capsys: pytest.CaptureFixture[str]) -> None:
    feeds = tmp_path / "feeds.npz"
    rng = np.random.default_rng(0)
    np.savez(feeds, image=rng.normal(size=(2, 12, 12, 3)).astype(np.float32),
             meta=rng.normal(size=(2, 4)).astype(np.float32))
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(f'[[step]]\nkind = "verify"\nname = "check"\na = "{keras_file}"\nb = "{tflite_file}"\n')
    results = {
        "freeze": _json(capsys, "freeze", keras_file, "-o", tmp_path / "f.pb"),
        "inspect": _json(capsys, "inspect", keras_pb),
        "verify": _json(capsys, "verify", keras_file, tflite_file, "--inputs", feeds),
        "transform": _json(capsys, "transform", keras_pb, "-o", tmp_path / "t.pb", "--transforms",
                           "strip_unused_nodes"),
        "convert": _json(capsys, "convert", keras_file, "-o", tmp_path / "c.tflite"),
        "bench": _json(capsys, "bench", tflite_file, "--runs", "2"),
        "compare": _json(capsys, "compare", keras_pb, tflite_file, "--runs", "2"),
        "run": _json(capsys, "run", recipe, "--out", tmp_path / "run"),
        "report": _json(capsys, "report", keras_pb, tflite_file, "-o", tmp_path / "r.html", "--no-bench"),
    }
    text = json.dumps({k: key_shape(v) for k, v in results.items()}, indent=1, sort_keys=True) + "\n"
    _check("json_keys.json", text)
