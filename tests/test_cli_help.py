"""Every command's --help reads well in an 80-column terminal: examples, one-line summaries,
hand-laid lines that are not re-wrapped, and no text taken for Rich markup and dropped."""

from __future__ import annotations

import inspect

import pytest
import typer
from rich.markup import render
from typer.testing import CliRunner

from ferkit.cli.app import app

# Rich pads the help text by one column on each side of 80; two more to spare.
HAND_LAID_WIDTH = 76


def _commands(command, path: tuple[str, ...] = ()):
    yield path, command
    for name, sub in sorted((getattr(command, "commands", None) or {}).items()):
        yield from _commands(sub, (*path, name))


COMMANDS = list(_commands(typer.main.get_command(app)))
IDS = [" ".join(("ferkit", *path)) for path, _ in COMMANDS]


def _paragraphs(command) -> list[str]:
    return inspect.cleandoc(command.help or "").split("\n\n")


def _hand_laid_lines(command) -> list[str]:
    """Lines that must show as written: those of a paragraph of several lines, or indented."""
    return [line for p in _paragraphs(command) if "\n" in p or p.startswith(" ")
            for line in p.split("\n")]


def test_the_walk_finds_every_command_and_group():
    assert {"ferkit train", "ferkit data audit", "ferkit sweep report", "ferkit demo"} <= set(IDS)


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_help_has_examples_and_a_one_line_summary(path, command):
    paragraphs = _paragraphs(command)
    assert "Examples:" in paragraphs
    examples = paragraphs[paragraphs.index("Examples:") + 1:]
    assert any(line.lstrip().startswith(("ferkit ", "torchrun ")) for p in examples
               for line in p.split("\n"))
    # the command lists show the first paragraph; a line break in it would show there as-is
    assert "\n" not in paragraphs[0]


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_hand_laid_help_lines_fit_80_columns(path, command):
    too_long = [line for line in _hand_laid_lines(command) if len(line) > HAND_LAID_WIDTH]
    assert not too_long


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_no_help_text_is_taken_for_rich_markup(path, command):
    """`pip install 'ferkit[serve]'` would lose its [serve]: it must be written \\[serve]."""
    texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
    for text in texts:
        assert render(text).plain == text.replace("\\[", "[")


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_rendered_help_at_80_columns_keeps_hand_laid_lines_whole(path, command):
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    shown = [line.strip() for line in result.output.splitlines()]
    assert all(len(line) <= 80 for line in result.output.splitlines())
    for line in _hand_laid_lines(command):
        assert line.strip().replace("\\[", "[") in shown, line


@pytest.mark.parametrize(("path", "command"), COMMANDS, ids=IDS)
def test_rendered_examples_keep_their_indent(path, command):
    """Typer dedents the text after the summary by its common indent, so examples right after
    a one-paragraph summary would show flush left with the "Examples:" heading."""
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERM": "dumb"})
    lines = [line.rstrip() for line in result.output.splitlines()]
    heading = next(line for line in lines if line.strip() == "Examples:")
    margin = len(heading) - len(heading.lstrip())
    for line in _hand_laid_lines(command):
        if line.startswith(" "):
            assert " " * margin + line.replace("\\[", "[").rstrip() in lines, line


@pytest.mark.parametrize(("path", "command"), COMMANDS[1:], ids=IDS[1:])
def test_the_command_list_shows_each_summary_on_one_line(path, command):
    """A group's --help lists its commands with their first paragraph: keep it one 80-column row."""
    parent = CliRunner().invoke(app, [*path[:-1], "--help"],
                                env={"COLUMNS": "80", "TERM": "dumb"})
    summary = _paragraphs(command)[0]
    assert any(summary in line for line in parent.output.splitlines()), summary
