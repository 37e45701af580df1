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


def test_the_version_has_one_owner_that_modules_import():
    """ferkit/version.py holds it (pyproject.toml's too); modules read it from there, not from
    the package's __init__, so __init__ stays free to import any of them."""
    import ferkit
    from ferkit.version import __version__

    project = (ROOT / "pyproject.toml").read_text().split("[project]", 1)[1]
    assert f'\nversion = "{__version__}"\n' in project.split("\n[", 1)[0]
    assert ferkit.__version__ == __version__
    readers = [p for p in (ROOT / "src/ferkit").rglob("*.py")
               if "from ferkit import __version__" in p.read_text()]
    assert readers == []


def test_tta_modes_are_named_in_one_module():
    """ferkit.tta owns the TTA modes and their check; nothing else spells them out."""
    from ferkit.tta import TTA_MODES

    spelled = [str(p.relative_to(ROOT)) for p in (ROOT / "src/ferkit").rglob("*.py")
               if p.name != "tta.py" and "tencrop" in p.read_text()]
    assert spelled == [] and "tencrop" in TTA_MODES


def test_readme_names_the_extras_the_test_script_installs():
    script = (ROOT / "scripts/test.sh").read_text()
    extras = re.search(r'-e "\.\[([^\]]+)\]"', script).group(1).split(",")
    setup = " ".join((ROOT / "README.md").read_text().split("## Set-up on a fresh clone", 1)[1]
                     .split("\n## ", 1)[0].split())
    said = setup.split("and ferkit with the", 1)[1].split("then runs", 1)[0]
    named_later = "sweep-postgres"  # its own sentence, with the PostgreSQL server it needs
    assert sorted(re.findall(r"`([\w-]+)`", said)) == sorted(set(extras) - {named_later}), said
    assert f"`{named_later}` extra" in setup


def test_readme_demo_output_has_the_line_demo_prints():
    """`ferkit demo` prints `model: ARCH (PATH of the checkpoint) on DEVICE`."""
    readme = (ROOT / "README.md").read_text()
    shown = readme.split("$ ferkit demo\n", 1)[1].splitlines()[0]
    assert re.fullmatch(r"model: [\w-]+ \(\S+/default\.pt\) on cpu", shown), shown

