"""`tunelab --help` and the help of every command and subcommand read well on an 80-column
terminal: they render, no line is wider than the terminal, every argument and option says what
it is for, each command opens with one whole sentence, and that sentence is what the command
list of its group shows (click cuts a longer one off with "...")."""
from __future__ import annotations

import re

import pytest
import typer
from typer.testing import CliRunner

from tunelab.cli import app

WIDTH = 80
ROOT = typer.main.get_command(app)


def walk(command, path=()):
    """(command path, click command) for the root, every group and every command below it."""
    yield path, command
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        yield from walk(sub, (*path, name))


COMMANDS = list(walk(ROOT))
IDS = [" ".join(path) or "tunelab" for path, _ in COMMANDS]


def render_help(path) -> str:
    result = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": str(WIDTH), "TERM": "dumb"},
                                prog_name="tunelab")
    assert result.exit_code == 0, result.output
    return result.output


def first_sentence(help_text: str) -> str:
    paragraph = " ".join(help_text.strip().split("\n\n")[0].split())
    match = re.match(r"(.+?[.!?])(\s|$)", paragraph)
    return match.group(1) if match else paragraph


def test_every_command_is_walked():
    assert {"train", "eval", "export", "recommend", "serve", "monitor", "data prepare", "models list",
            "models register", "models promote", "models rollback"} <= set(IDS)


@pytest.mark.parametrize("path,command", COMMANDS, ids=IDS)
def test_help_fits_80_columns(path, command):
    text = render_help(path)
    assert "Usage: tunelab" in text
    wide = [line for line in text.splitlines() if len(line) > WIDTH]
    assert not wide, f"lines over {WIDTH} columns:\n" + "\n".join(wide)


@pytest.mark.parametrize("path,command", COMMANDS, ids=IDS)
def test_every_argument_and_option_has_help(path, command):
    ctx = ROOT.make_context("tunelab", [], resilient_parsing=True)
    missing = [p.name for p in command.get_params(ctx) if not p.hidden and not (getattr(p, "help", None) or "").strip()]
    assert not missing, f"no help text for {missing}"


@pytest.mark.parametrize("path,command", COMMANDS, ids=IDS)
def test_help_opens_with_a_sentence(path, command):
    sentence = first_sentence(command.help or "")
    assert sentence[:1].isupper(), f"{sentence!r} does not start a sentence"
    assert sentence.endswith("."), f"{sentence!r} is not a whole sentence"


@pytest.mark.parametrize("path,command", [c for c in COMMANDS if getattr(c[1], "commands", None)],
                         ids=[i for i, c in zip(IDS, COMMANDS) if getattr(c[1], "commands", None)])
def test_command_lists_show_whole_first_sentences(path, command):
    listed = {}
    section = render_help(path).split("\nCommands:\n", 1)[1]
    for line in section.splitlines():
        name, _, summary = line.strip().partition(" ")
        if name in command.commands:
            listed[name] = summary.strip()
    assert set(listed) == set(command.commands)  # one line each: no summary wrapped onto a second line
    for name, summary in listed.items():
        assert summary == first_sentence(command.commands[name].help or ""), f"`{name}` is listed as {summary!r}"


@pytest.mark.parametrize("path,command", COMMANDS, ids=IDS)
def test_defaults_are_stated_once(path, command):
    """click appends [default: ...] where it shows a default; the help text must not say it again."""
    ctx = ROOT.make_context("tunelab", [], resilient_parsing=True)
    twice = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record and "[default:" in record[1] and "default" in record[1].split("[default:")[0].lower():
            twice.append(record[0])
    assert not twice, f"default stated twice for {twice}"
