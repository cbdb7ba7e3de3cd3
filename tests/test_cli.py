"""The CLI's own behaviour: lazy start-up, help with examples, the demo end to end."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tfshrink.cli import main


def test_help_does_not_import_tensorflow() -> None:
    code = (
        "import sys\n"
        "from tfshrink.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "freeze" in proc.stdout and "inspect" in proc.stdout and "verify" in proc.stdout


@pytest.mark.parametrize("command", ["freeze", "inspect", "verify", "demo"])
def test_each_command_has_help_with_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "Example" in out and f"tfshrink {command}" in out


def test_python_dash_m_works() -> None:
    proc = subprocess.run([sys.executable, "-m", "tfshrink", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "0.1.0" in proc.stdout


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--out", str(tmp_path / "demo")])
    out = capsys.readouterr().out
    assert exc.value.code == 0, out
    assert "astronaut's face 1.000" in out or "astronaut's face 0.9" in out
    assert (tmp_path / "demo" / "onet.pb").is_file()
