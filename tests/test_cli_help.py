"""Every command, subcommand, option and argument of ``sbc`` says what it is.

Walks the parser ``sbc`` really uses, so a new option without help text
fails here without anyone listing it; ``sbc serve --help`` is also run as
a process and must name each of serve's options.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from sbc.cli import build_parser

SBC = Path(sys.executable).with_name("sbc")


def parsers(
    parser: argparse.ArgumentParser, path: str = "sbc"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """Each parser with its command path: ``sbc``, ``sbc config apply``, ..."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from parsers(sub, f"{path} {name}")


def undescribed(parser: argparse.ArgumentParser) -> list[str]:
    """Options and arguments of ``parser`` without help text."""
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            missing += [
                choice.dest for choice in action._choices_actions if not choice.help
            ]
        elif not action.help:
            missing.append("/".join(action.option_strings) or action.dest)
    return missing


def test_every_command_option_and_argument_has_help() -> None:
    walked = dict(parsers(build_parser()))

    assert {"sbc serve", "sbc config apply", "sbc user add"} <= set(walked)
    assert {path: undescribed(p) for path, p in walked.items() if undescribed(p)} == {}


def test_serve_help_names_every_serve_option() -> None:
    serve = dict(parsers(build_parser()))["sbc serve"]
    options = [
        option
        for action in serve._actions
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    ]
    shown = subprocess.run(
        [str(SBC), "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout

    assert len(options) >= 14
    assert [option for option in options if option not in shown] == []
