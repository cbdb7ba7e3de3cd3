"""Recipe validation: every error names the recipe line, and nothing runs or is written before it passes."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tfshrink.cli import main
from tfshrink.errors import UserError
from tfshrink.recipe import load_recipe, parse_recipe
from tfshrink.recipe.parse import Ref

GOOD = """\
title = "demo"
out = "build"

[[step]]
kind = "freeze"
input = "model.keras"
binds = { is_training = false }
input-shape = ["image=1,12,12,3"]

[[step]]
kind = "transform"
input = "@freeze"
transforms = \"\"\"
  remove_nodes(op=Identity)
  strip_unused_nodes
\"\"\"
optimize = true

[[step]]
kind = "convert"
name = "int8"
input = "@transform"
quantize = "INT8"
calibration = "random"
keep_float = ["CONV_2D", "MEAN"]
input_shapes = { image = [1, 12, 12, 3] }

[[step]]
kind = "verify"
a = "@freeze"
b = "@int8"
atol = 1
inputs = "feeds.npz"

[[step]]
kind = "bench"
input = "@int8"
runs = 5
no_xnnpack = true

[[step]]
kind = "report"
models = [
  "model.keras",   # the source
  "@int8",
]
quant_errors = "layers.csv"
"""


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    for name in ("model.keras", "feeds.npz", "layers.csv", "model.tflite", "graph.pb"):
        (tmp_path / name).write_bytes(b"not read while validating")
    return tmp_path


def _parse(folder: Path, text: str) -> object:
    path = folder / "recipe.toml"
    path.write_text(text)
    return load_recipe(path)


def _error(folder: Path, text: str) -> str:
    with pytest.raises(UserError) as info:
        _parse(folder, text)
    return info.value.one_line()


def test_a_good_recipe_is_normalized(folder: Path) -> None:
    recipe = _parse(folder, GOOD)
    assert recipe.title == "demo" and recipe.out == folder / "build"
    assert [(s.name, s.kind, s.line) for s in recipe.steps] == [
        ("freeze", "freeze", 4), ("transform", "transform", 10), ("int8", "convert", 19),
        ("verify", "verify", 28), ("bench", "bench", 35), ("report", "report", 41)]
    freeze, transform, int8, verify, bench, report = recipe.steps
    assert freeze.options == {"input": folder / "model.keras", "binds": {"is_training": "false"},
                              "input_shapes": {"image": (1, 12, 12, 3)}}
    assert transform.options["input"] == Ref("freeze") and transform.options["optimize"] is True
    assert int8.options["quantize"] == "int8" and int8.options["calibration"] == "random"
    assert int8.options["keep_float"] == ["CONV_2D", "MEAN"]
    assert int8.options["input_shapes"] == {"image": (1, 12, 12, 3)}
    assert verify.options["atol"] == 1.0 and verify.options["inputs"] == folder / "feeds.npz"
    assert bench.options == {"input": Ref("int8"), "runs": 5, "no_xnnpack": True}
    assert report.options["models"] == [folder / "model.keras", Ref("int8")]
    assert report.line_of("quant_errors") == 47 and int8.line_of("keep_float") == 25


def _replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


@pytest.mark.parametrize("text, expected", [
    (_replace('kind = "freeze"', 'kind = "frezee"'),
     "recipe.toml:5: unknown step kind 'frezee' (closest: freeze)"),
    (_replace('input = "model.keras"', 'input = "missing.keras"'),
     "recipe.toml:6: step 'freeze' (freeze): input = 'missing.keras': no such file or folder"),
    (_replace("runs = 5", "rusn = 5"),
     "recipe.toml:38: step 'bench' (bench): unknown option 'rusn' (closest: runs)"),
    (_replace("runs = 5", 'runs = "5"'),
     "recipe.toml:38: step 'bench' (bench): runs must be an integer, not '5'"),
    (_replace('input = "@int8"', 'input = "@int9"'),
     "recipe.toml:37: step 'bench' (bench): input = '@int9': no earlier step writing a model is named 'int9' "
     "(closest: @int8)"),
    (_replace('a = "@freeze"', 'a = "@bench"'),
     "recipe.toml:30: step 'verify' (verify): a = '@bench' refers to a later step"),
    (_replace('input = "@int8"', 'input = "@verify"'),
     "recipe.toml:37: step 'bench' (bench): input = '@verify': step 'verify' (verify) writes no model"),
    (_replace('quantize = "INT8"', 'quantize = "int4"'),
     "recipe.toml:23: step 'int8' (convert): quantize 'int4' is not one of none, float16, dynamic, int8, "
     "int16x8, auto (closest: int8)"),
    (_replace("strip_unused_nodes", "strip_unused_nodez"),
     "recipe.toml:13: step 'transform' (transform): unknown transform 'strip_unused_nodez' "
     "(closest: strip_unused_nodes)"),
    (_replace('quant_errors = "layers.csv"', 'quant_errors = "nope.csv"'),
     "recipe.toml:47: step 'report' (report): quant_errors = 'nope.csv' does not exist"),
    (_replace('out = "build"', 'outt = "build"'),
     "recipe.toml:2: unknown top-level key 'outt' (closest: out)"),
    (_replace('name = "int8"', 'name = "freeze"'),
     "recipe.toml:19: two steps named 'freeze' (lines 4 and 19)"),
    (_replace('kind = "verify"\n', ""), "recipe.toml:28: step without a kind"),
    (_replace('a = "@freeze"\n', ""), "recipe.toml:28: step 'verify' (verify): missing option 'a'"),
    (_replace('input = "@transform"', 'input = "model.tflite"'),
     "recipe.toml:22: step 'int8' (convert): input is a TFLite model"),
    (_replace('input = "@freeze"', 'input = "model.keras"'),
     "recipe.toml:12: step 'transform' (transform): transform takes a frozen GraphDef, and input is a keras "
     "model"),
    (_replace("optimize = true", "optimize = true\noptimize-x = 1"),
     "recipe.toml:18: step 'transform' (transform): unknown option 'optimize-x'"),
    (_replace("runs = 5", "runs = 5\nmin_seconds = 1"),
     "recipe.toml:39: step 'bench' (bench): give runs or min_seconds, not both"),
    ("x = [\n", "recipe.toml: not valid TOML"),
    ("a = 1\na = 2\n", "recipe.toml:2: not valid TOML"),
    ('title = "no steps"\n', "recipe.toml: the recipe has no steps"),
])
def test_errors_point_at_the_line(folder: Path, text: str, expected: str) -> None:
    message = _error(folder, text)
    assert message.startswith(f"{folder}/{expected}"), message
    assert "\n" not in message


def test_option_spellings(folder: Path) -> None:
    text = textwrap.dedent("""\
        [[step]]
        kind = "bench"
        input = "graph.pb"
        input_shape = { x = [1, 3] }
        bind = ["is_training=false"]
        min-seconds = 0.5
        """)
    (step,) = _parse(folder, text).steps
    assert step.options == {"input": folder / "graph.pb", "input_shapes": {"x": (1, 3)},
                            "binds": ["is_training=false"], "min_seconds": 0.5}
    assert step.line_of("min_seconds") == 6


def test_convert_accepts_the_api_keywords_it_does_not_list(folder: Path) -> None:
    from tfshrink.recipe.schema import kind_options

    opts = kind_options("convert")
    assert opts["verify_samples"].type == "int" and "progress" not in opts and "source" not in opts


def test_relative_paths_follow_the_recipe_not_the_cwd(folder: Path, monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path_factory: pytest.TempPathFactory) -> None:
    monkeypatch.chdir(tmp_path_factory.mktemp("elsewhere"))
    recipe = parse_recipe('[[step]]\nkind = "bench"\ninput = "graph.pb"\n', folder / "r.toml")
    assert recipe.steps[0].options["input"] == folder / "graph.pb" and recipe.out == folder / "r-out"


def test_cli_bad_recipe_is_one_line_exit_2_and_writes_nothing(folder: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = folder / "recipe.toml"
    path.write_text(_replace('kind = "freeze"', 'kind = "frezee"'))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(path), "--out", str(folder / "out")])
    captured = capsys.readouterr()
    assert exit_info.value.code == 2 and captured.out == ""
    assert captured.err == f"error: {path}:5: unknown step kind 'frezee' (closest: freeze)\n"
    assert not (folder / "out").exists() and not (folder / "build").exists()
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(folder / "missing.toml")])
    assert exit_info.value.code == 2 and "no such recipe file" in capsys.readouterr().err


def test_a_convert_report_folder_can_feed_quant_errors(folder: Path) -> None:
    text = _replace('keep_float = ["CONV_2D", "MEAN"]', 'report = true').replace(
        'quant_errors = "layers.csv"', 'quant_errors = "@int8"')
    recipe = _parse(folder, text)
    assert recipe.step("int8").options["report"] == "int8-report"
    assert recipe.step("report").options["quant_errors"] == Ref("int8", "report")
    message = _error(folder, GOOD.replace('quant_errors = "layers.csv"', 'quant_errors = "@int8"'))
    assert message.startswith(f"{folder}/recipe.toml:47: step 'report' (report): quant_errors = '@int8' is not "
                              "a file (give a path, or \"@NAME\" of a convert step with report = true)")
    message = _error(folder, text.replace('quantize = "INT8"', 'quantize = "float16"'))
    assert message.startswith(f"{folder}/recipe.toml:25: step 'int8' (convert): report measures per-layer int8")
    message = _error(folder, _replace('keep_float = ["CONV_2D", "MEAN"]', 'report = "../up"'))
    assert message.startswith(f"{folder}/recipe.toml:25: step 'int8' (convert): report must be true or a folder")


def test_the_example_recipe_is_valid(tmp_path: Path, onet_ckpt: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "recipe.toml"
    (tmp_path / "recipe.toml").write_text(example.read_text())
    (tmp_path / "onet_ckpt").symlink_to(onet_ckpt, target_is_directory=True)
    recipe = load_recipe(tmp_path / "recipe.toml")
    assert [s.kind for s in recipe.steps] == ["freeze", "transform", "convert", "convert", "verify", "bench",
                                              "report"]
    assert recipe.out == tmp_path / "recipe-out" and recipe.step("report").options["quant_errors"] == Ref(
        "int8", "report")
