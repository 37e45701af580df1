"""The repository keeps its promises: CI runs the README's test command, the tree stays small."""

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    setup = text.split("## Set-up on a fresh clone", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", setup, flags=re.S)


def test_ci_runs_the_readme_test_command():
    main_job, test_command = readme_commands()[:2]
    ci_lines = [line for line in (ROOT / ".ci/run").read_text().splitlines()
                if line.strip() and not line.startswith(("#", "set ", "cd "))]
    assert ci_lines == [test_command]
    assert "ferkit demo" in main_job


def test_tracked_files_stay_under_8_mb():
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    total = sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file())
    assert total < 8 * 1024 * 1024, f"tracked files take {total / 2**20:.1f} MB"
