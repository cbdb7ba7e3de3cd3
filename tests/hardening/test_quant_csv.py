"""Issue 16: `tfshrink report --quant-errors` given something that is not a UTF-8 CSV (binary bytes,
NUL bytes, a field past the csv module's limit, a FIFO) is one line and exit 2, before any work,
with nothing written and the file unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_real_world import run_cli

HEADER = b"layer,rmse/scale\n"
CASES = {
    "latin-1": HEADER + b"conv,0.3\ncaf\xe9,0.9\n",
    "nul-byte": HEADER + b"co\x00nv,0.3\n",
    "random-bytes": bytes((i * 167 + 13) % 256 for i in range(600)),
    "utf-16": "layer,rmse/scale\nconv,0.3\n".encode("utf-16"),
    "huge-field": HEADER + b'"' + b"x" * 200_000 + b'",0.3\n',
}
MESSAGES = {"latin-1": "a binary file, not a UTF-8 CSV", "nul-byte": "a binary file, not a UTF-8 CSV",
            "random-bytes": "a binary file, not a UTF-8 CSV", "utf-16": "a binary file, not a UTF-8 CSV",
            "huge-field": "not a readable CSV (field larger than field limit"}


def _one_line_exit_2(code: int, err: str, expected: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], err
    assert "unexpected" not in err


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_binary_quant_errors_csv_is_a_clean_exit_2(case: str, tflite_file: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "errors.csv"
    csv.write_bytes(CASES[case])
    out = tmp_path / "report.html"
    code, _, err = run_cli(capsys, "report", tflite_file, "-o", out, "--no-bench", "--quant-errors", csv)
    _one_line_exit_2(code, err, MESSAGES[case])
    assert csv.read_bytes() == CASES[case]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["errors.csv"]  # no report, no temporary file


def test_a_folder_whose_only_csv_is_binary(tflite_file: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "int8_report"
    folder.mkdir()
    (folder / "layer_errors.csv").write_bytes(CASES["latin-1"])
    code, _, err = run_cli(capsys, "report", tflite_file, "-o", tmp_path / "r.html", "--no-bench",
                           "--quant-errors", folder)
    _one_line_exit_2(code, err, "layer_errors.csv: a binary file, not a UTF-8 CSV")
    assert not (tmp_path / "r.html").exists()


def test_a_fifo_as_quant_errors_is_refused_without_hanging(tflite_file: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "errors.csv"
    os.mkfifo(fifo)
    code, _, err = run_cli(capsys, "report", tflite_file, "-o", tmp_path / "r.html", "--no-bench",
                           "--quant-errors", fifo)
    _one_line_exit_2(code, err, "not a regular file")


def test_a_utf8_csv_with_a_bom_is_read(tflite_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "errors.csv"
    csv.write_bytes(b"\xef\xbb\xbf" + HEADER + "conv_é,0.3\nfc,0.9\n".encode())
    out = tmp_path / "r.html"
    code, _, err = run_cli(capsys, "report", tflite_file, "-o", out, "--no-bench", "--quant-errors", csv)
    assert code == 0, err
    html = out.read_text(encoding="utf-8")
    assert "conv_é" in html and "fc" in html
