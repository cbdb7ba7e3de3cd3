"""Issue 16: a recipe never overwrites a file it did not create, and a damaged cache never stops it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.test_real_world import run_cli
from tfshrink.recipe.cache import CACHE_DIR


def _recipe(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "r.toml"
    path.write_text('out = "."\n' + body)
    return path


def test_a_step_would_replace_the_users_own_file(keras_file: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    mine = tmp_path / "model.pb"
    mine.write_bytes(b"my only copy")
    recipe = _recipe(tmp_path, f'[[step]]\nkind = "freeze"\nname = "model"\ninput = "{keras_file}"\n')
    code, _, err = run_cli(capsys, "run", recipe)
    assert code == 2 and "r.toml:2: step 'model' would replace" in err and "which no recipe run wrote" in err
    assert mine.read_bytes() == b"my only copy"
    assert not (tmp_path / "summary.json").exists()
    code, _, err = run_cli(capsys, "run", recipe, "--force")  # said on purpose: replaced
    assert code == 0, err
    assert mine.read_bytes() != b"my only copy"
    code, _, err = run_cli(capsys, "run", recipe)  # now the recipe's own: runs (cached)
    assert code == 0, err


def test_a_step_named_summary_is_refused(keras_file: Path, tflite_file: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _recipe(tmp_path, f'[[step]]\nkind = "verify"\nname = "summary"\na = "{keras_file}"\nb = "{tflite_file}"\n')
    code, _, err = run_cli(capsys, "run", recipe)
    assert code == 2 and "would write summary.json, which the run writes" in err


@pytest.mark.parametrize("damage", ['["not", "a", "dict"]', '{"output": 3}', '{"extra_sha256": "x"}', "{"])
def test_a_damaged_cache_entry_is_run_again(damage: str, keras_file: Path, tflite_file: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    recipe = _recipe(tmp_path, f'[[step]]\nkind = "verify"\nname = "check"\na = "{keras_file}"\nb = "{tflite_file}"\n')
    assert run_cli(capsys, "run", recipe)[0] == 0
    for entry in (tmp_path / CACHE_DIR).glob("*.json"):
        entry.write_text(damage)
    code, out, err = run_cli(capsys, "run", recipe, "--json")
    assert code == 0, err
    assert json.loads(out)["steps"][0]["status"] == "ok"


def test_a_file_where_the_cache_folder_goes_is_a_clean_error(keras_file: Path, tflite_file: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / CACHE_DIR).write_text("not a folder")
    recipe = _recipe(tmp_path, f'[[step]]\nkind = "verify"\nname = "check"\na = "{keras_file}"\nb = "{tflite_file}"\n')
    code, _, err = run_cli(capsys, "run", recipe)
    assert code == 2 and "a file where the recipe cache folder goes" in err
