"""The installed `onetok` executable itself (not only main()), on the shipped models and example photos."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "src/onetok/assets/examples").glob("*.jpg"))


def onetok(*args, cwd: Path) -> subprocess.CompletedProcess:
    executable = Path(sys.executable).parent / "onetok"
    if not executable.is_file():
        pytest.skip(f"no onetok executable beside {sys.executable} (pip install -e .)")
    env = os.environ | {"PYTHONPATH": str(REPO / "src")}  # this checkout's code, as the tests import it
    return subprocess.run([str(executable), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_executable_runs_commands_and_exits_2_on_bad_input(tmp_path):
    info = onetok("info", REPO / "src/onetok/assets/default_tokenizer", cwd=tmp_path)
    assert info.returncode == 0 and "tokens per image: 64" in info.stdout

    done = onetok("tokenize", *EXAMPLES[:2], "-o", "t.json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(json.loads((tmp_path / "t.json").read_text())["tokens"]) == 2

    done = onetok("generate", "--class", "3", "-n", "2", "-o", "g.png", cwd=tmp_path)
    assert done.returncode == 0 and (tmp_path / "g.png").is_file(), done.stderr

    bad = onetok("generate", "--class", "99", "-o", "x.png", cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "onetok: error: class id 99 is outside the generator's classes 0..21"]
    assert not (tmp_path / "x.png").exists()

    for command in (["demo"], ["card", "generator"], ["sample"]):
        shown = onetok(*command, "--help", cwd=tmp_path)
        assert shown.returncode == 0 and "usage: onetok" in shown.stdout
