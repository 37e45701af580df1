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



def _string_constants(path: Path) -> list[str]:
    """The string literals of a module's code, docstrings left out (prose may name a file)."""
    import ast

    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef
                                | ast.AsyncFunctionDef)
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
            and isinstance(node.value, str) and id(node) not in docstrings]


def test_run_directory_file_names_have_one_owner():
    """ferkit/run_files.py names the run directory's files; every module that reads or writes
    one (training.run_dir, models.checkpoint, serving, evaluation, the CLI) imports the name."""
    from ferkit import run_files
    from ferkit.training import run_dir

    names = {run_files.CONFIG, run_files.METRICS, run_files.BEST, run_files.LAST,
             run_files.CURVES, *run_files.CHECKPOINTS}
    assert names == {"config.json", "metrics.jsonl", "best.pt", "last.pt", "curves.png",
                     "model.pt"}
    assert (run_dir.CONFIG, run_dir.METRICS, run_dir.BEST, run_dir.LAST, run_dir.CURVES) == \
        (run_files.CONFIG, run_files.METRICS, run_files.BEST, run_files.LAST, run_files.CURVES)
    owner = ROOT / "src/ferkit/run_files.py"
    spelled = sorted(f"{p.relative_to(ROOT)}: {s!r}" for p in (ROOT / "src/ferkit").rglob("*.py")
                     if p != owner for s in _string_constants(p)
                     if s in names or any(s.endswith(f"/{n}") for n in names))
    assert spelled == []


def test_checkpoint_and_serving_find_run_files_without_the_training_layer():
    """models.checkpoint and serving.engine reach the run directory's file names through the
    leaf ferkit.run_files: importing them imports nothing of ferkit.training (the layer above)."""
    import sys

    code = ("import sys, ferkit.models.checkpoint, ferkit.serving.engine; "
            "print([m for m in sys.modules if m.startswith('ferkit.training')])")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
