"""The test command the README gives is the one CI runs, and it ends with pytest's summary line."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_test_command() -> str:
    section = (ROOT / "README.md").read_text().split("## Tests", 1)[1]
    return re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()


def test_ci_runs_the_readme_test_command():
    command = _readme_test_command()
    lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert lines[-1] == command
    # the quickstart's one-liner installs and runs the same command
    assert (ROOT / "README.md").read_text().count(f'pip install -e ".[test]" && {command}') == 1


def test_readme_test_command_ends_with_the_summary_line(tmp_path):
    # the project's pytest settings (pyproject.toml) with the README's flags, on a file of two tests
    (tmp_path / "test_two.py").write_text("def test_a():\n    pass\n\n\ndef test_b():\n    pass\n")
    flags = _readme_test_command().split("pytest", 1)[1].split()
    res = subprocess.run([sys.executable, "-m", "pytest", *flags, "-c", str(ROOT / "pyproject.toml"),
                          "--rootdir", str(tmp_path), "-p", "no:cacheprovider", str(tmp_path / "test_two.py")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.fullmatch(r"2 passed in [0-9.]+s", res.stdout.strip().splitlines()[-1]), res.stdout
