"""The repository keeps its promises: CI runs the README's test command, the README stays a
five-minute read whose links (and the docs pages' links) lead somewhere, the tree stays small."""

import json
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


def _tracked() -> list[str]:
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                           check=True).stdout.decode().split("\0")
    return [f for f in files if f and (ROOT / f).is_file()]


def test_tracked_files_stay_under_8_mb():
    """The package and its sources; the training campaign's checkpoints (campaign/) have a
    budget of their own (next test)."""
    total = sum((ROOT / f).stat().st_size for f in _tracked() if not f.startswith("campaign/"))
    assert total < 8 * 1024 * 1024, f"tracked files take {total / 2**20:.1f} MB"


def test_the_campaign_keeps_one_inflight_run_within_its_budget():
    """campaign/PLAN.md's rules: at most one in-flight run's state is tracked, and the campaign's
    files stay inside its repository budget."""
    files = [f for f in _tracked() if f.startswith("campaign/")]
    inflight = {f.split("/")[2] for f in files if f.startswith("campaign/inflight/")}
    assert len(inflight) <= 1, inflight
    budget = json.loads((ROOT / "campaign/jobs.json").read_text())["repository_budget"]
    total = sum((ROOT / f).stat().st_size for f in files)
    assert total < budget["limit_mib"] * 2**20


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



def _docs_pages() -> list[Path]:
    return sorted((ROOT / "docs").rglob("*.md"))


def _anchors(page: Path) -> set[str]:
    """The heading ids MkDocs (Python-Markdown's toc) gives a page's headings."""
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    headings = re.findall(r"^#{1,6} (.+)$", text, flags=re.M)
    slugs = (re.sub(r"[^\w\s-]", "", h.replace("`", "")).strip().lower() for h in headings)
    return {re.sub(r"[-\s]+", "-", s) for s in slugs}


def test_readme_is_a_five_minute_read():
    """Everything past the set-up, the quick start, the commands and the headline figures
    lives in the docs pages (mkdocs.yml), not in the README."""
    assert len((ROOT / "README.md").read_text().splitlines()) <= 300


def test_links_in_the_readme_and_the_docs_pages_lead_somewhere():
    broken = []
    for page in [ROOT / "README.md", *_docs_pages()]:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (page.parent / path).resolve() if path else page
            if not dest.is_file():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                broken.append(f"{page.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []


def test_the_docs_site_lists_every_page():
    """mkdocs.yml's nav names each page under docs/ once (`mkdocs build --strict` builds it)."""
    nav = (ROOT / "mkdocs.yml").read_text().split("\nnav:", 1)[1]
    listed = re.findall(r":\s*(\S+\.md)\s*$", nav, flags=re.M)
    pages = [str(p.relative_to(ROOT / "docs")) for p in _docs_pages()]
    assert sorted(listed) == sorted(pages)


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
