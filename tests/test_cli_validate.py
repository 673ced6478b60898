"""``bcdiag validate`` as a real subprocess: one line per file, exit codes, no tracebacks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from scan_corpus import MG_FILE

FIELDS = {"file", "ok", "code", "message", "modality", "rows", "columns"}
PNG_FILE = "mias/png512/mdb001.png"  # a mammogram
US_FILE = "busi256/images/benign_107.png"  # an ultrasound image


def run_validate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run ``python -m bcdiag validate ARGS`` and check it never shows a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "bcdiag", "validate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert "Traceback" not in result.stdout + result.stderr
    return result


def json_lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    for line in lines:
        assert set(line) == FIELDS
    return lines


def test_good_files_exit_zero(data_dir: Path) -> None:
    result = run_validate("--json", "--modality", "us", data_dir / MG_FILE, data_dir / US_FILE)
    assert result.returncode == 0, result.stdout
    lines = json_lines(result)
    assert [(x["ok"], x["code"], x["modality"]) for x in lines] == [
        (True, None, "MG"),  # the DICOM's own modality wins over the hint
        (True, None, "US"),
    ]
    assert (lines[0]["rows"], lines[0]["columns"]) == (1108, 716)


def test_a_mammogram_stated_as_ultrasound_is_refused(data_dir: Path) -> None:
    result = run_validate("--json", "--modality", "us", data_dir / PNG_FILE)
    assert result.returncode == 1
    (line,) = json_lines(result)
    assert line["code"] == "modality-mismatch"
    assert "looks like a mammogram, not an ultrasound image" in str(line["message"])


def test_bad_and_missing_files_exit_one(data_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no_such_scan.dcm"
    result = run_validate(
        "--json", data_dir / "dicom" / "CT_small.dcm", missing, data_dir / MG_FILE
    )
    assert result.returncode == 1
    lines = json_lines(result)
    assert [(x["ok"], x["code"]) for x in lines] == [
        (False, "unsupported-modality"),
        (False, "unreadable"),
        (True, None),
    ]
    assert lines[1]["file"] == str(missing)
    assert str(missing) in str(lines[1]["message"])


def test_folder_is_walked_recursively(data_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    shutil.copy(data_dir / PNG_FILE, tmp_path / "sub" / "deeper" / "scan.dcm")
    (tmp_path / "sub" / "notes.png").write_text("not an image\n")
    result = run_validate("--json", tmp_path)
    assert result.returncode == 1
    verdicts = {Path(str(x["file"])).name: x["code"] for x in json_lines(result)}
    assert verdicts == {"scan.dcm": None, "notes.png": "not-dicom-or-image"}


def test_plain_output_is_one_line_per_file(data_dir: Path) -> None:
    result = run_validate(data_dir / "dicom" / "MR_small.dcm", data_dir / MG_FILE)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("REJECTED [unsupported-modality] ")
    assert "no model for MR yet" in lines[0]
    assert lines[1].startswith("ok ")
