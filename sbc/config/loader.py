"""Read the YAML configuration file, and report every fault by file and line.

The file is composed into YAML nodes first (they carry line marks), then
built into plain data with the safe constructors, then validated by the
model. Each fault becomes a :class:`ConfigProblem` naming the file, the line,
the field path (``trunks[2].targets[0].port``) and what is wrong, all of
them at once so an operator fixes a file in one pass.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from sbc.io.settings import ListenSpec

from . import model
from .model import Config, Listener
from .references import Problem, format_path, reference_problems
from .types import REVEAL_SECRETS

__all__ = [
    "ConfigError",
    "ConfigProblem",
    "check_config_file",
    "dump_config",
    "listen_specs",
    "load_config",
    "parse_config",
]

# Configuration files are a few kilobytes; refuse to parse a huge one.
MAX_FILE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One fault: where (file, 1-based line when known, field path) and what."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return (
            f"{where}: {self.path}: {self.message}"
            if self.path
            else (f"{where}: {self.message}")
        )


class ConfigError(Exception):
    """The configuration cannot be used; ``problems`` lists every fault."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("\n".join(str(problem) for problem in problems))
        self.problems = problems


def load_config(path: str | Path) -> Config:
    """Load and fully check the configuration file at ``path``.

    Relative TLS file paths are resolved against the file's directory, and
    must name readable files. Raises :class:`ConfigError`.
    """
    file = Path(path)
    try:
        with file.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            [ConfigProblem(str(file), None, "", _os_error(exc))]
        ) from None
    if len(data) > MAX_FILE_BYTES:
        message = f"larger than {MAX_FILE_BYTES} bytes"
        raise ConfigError([ConfigProblem(str(file), None, "", message)])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        message = f"not UTF-8 text (byte {exc.start})"
        raise ConfigError([ConfigProblem(str(file), None, "", message)]) from None
    return parse_config(text, source=str(file), base_dir=file.parent)


def check_config_file(path: str | Path) -> list[str]:
    """Every problem of the file at ``path`` as a printable line; [] when good.

    This is what ``sbc config check FILE`` prints.
    """
    try:
        load_config(path)
    except ConfigError as exc:
        return [str(problem) for problem in exc.problems]
    return []


def parse_config(
    text: str, *, source: str = "<config>", base_dir: Path | None = None
) -> Config:
    """Parse and check configuration ``text``; ``source`` names it in errors.

    With ``base_dir``, relative TLS paths are resolved against it and the
    files must exist; without it, files are not looked at.
    """
    document = _compose(text, source)
    problems = list(_duplicate_keys(document.root, source))
    try:
        config = Config.model_validate(document.data)
    except ValidationError as exc:
        problems += [
            _from_pydantic(error, document.root, source) for error in exc.errors()
        ]
        raise ConfigError(_in_file_order(problems)) from None
    problems += [
        _locate(problem, document.root, source)
        for problem in reference_problems(config)
    ]
    if base_dir is not None:
        config = _resolve_files(config, base_dir)
        problems += [
            _locate(problem, document.root, source)
            for problem in _file_problems(config)
        ]
    if problems:
        raise ConfigError(_in_file_order(problems))
    return config


def _in_file_order(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    # Stable: problems on one line keep the order the checks found them.
    return sorted(problems, key=lambda problem: problem.line or 0)


def dump_config(config: Config, *, reveal_secrets: bool = False) -> str:
    """``config`` as YAML that :func:`parse_config` reads back.

    Secrets are written as a mask unless ``reveal_secrets`` is set; the
    loader refuses the mask, so a redacted export cannot be loaded by
    mistake as if it held the passwords.
    """
    data = config.model_dump(
        mode="json", exclude_none=True, context={REVEAL_SECRETS: reveal_secrets}
    )
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def listen_specs(config: Config) -> tuple[ListenSpec, ...]:
    """The transport layer's socket list for the configured listeners (an
    ``ipsec`` one is a binding in the IPsec data plane, never a socket)."""
    return tuple(
        ListenSpec(
            listener.transport.upper(),
            str(listener.address),
            listener.port,
            listener.ipsec,
        )
        for listener in config.listeners
    )


# YAML to nodes and data


@dataclass(frozen=True, slots=True)
class _Document:
    root: yaml.Node | None
    data: Any


def _compose(text: str, source: str) -> _Document:
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = None if root is None else loader.construct_document(root)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_yaml_problem(exc, source)]) from None
    except yaml.YAMLError as exc:
        problem = ConfigProblem(source, None, "", f"YAML error: {type(exc).__name__}")
        raise ConfigError([problem]) from None
    finally:
        loader.dispose()
    if root is None:
        raise ConfigError([ConfigProblem(source, None, "", "the file is empty")])
    if not isinstance(root, yaml.MappingNode):
        line = root.start_mark.line + 1
        message = "the top level must be a mapping (listeners:, trunks:, ...)"
        raise ConfigError([ConfigProblem(source, line, "", message)])
    return _Document(root, data)


def _yaml_problem(exc: yaml.MarkedYAMLError, source: str) -> ConfigProblem:
    # Only the problem and context phrases: the library's str() quotes the
    # offending line, which may be a password.
    mark = exc.problem_mark or exc.context_mark
    line = None if mark is None else mark.line + 1
    words = [part for part in (exc.context, exc.problem) if part]
    column = "" if mark is None else f" (column {mark.column + 1})"
    return ConfigProblem(source, line, "", f"YAML syntax: {', '.join(words)}{column}")


def _duplicate_keys(node: yaml.Node | None, source: str) -> Iterator[ConfigProblem]:
    """YAML keeps the last of two equal keys silently; a typo made twice
    would then hide the first value. Report every repeat."""
    for mapping, path in _mappings(node, ()):
        seen: set[str] = set()
        for key, _ in mapping.value:
            name = str(key.value)
            if name in seen:
                yield ConfigProblem(
                    source,
                    key.start_mark.line + 1,
                    format_path((*path, name)),
                    "key given twice",
                )
            seen.add(name)


def _mappings(
    node: yaml.Node | None, path: tuple[str | int, ...]
) -> Iterator[tuple[yaml.MappingNode, tuple[str | int, ...]]]:
    if isinstance(node, yaml.MappingNode):
        yield node, path
        for key, value in node.value:
            yield from _mappings(value, (*path, str(key.value)))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _mappings(item, (*path, index))


# Mapping errors back to lines


def _from_pydantic(
    error: ErrorDetails, root: yaml.Node | None, source: str
) -> ConfigProblem:
    path, line = _walk(root, error["loc"])
    message = error["msg"]
    if error["type"] == "missing":
        message = "required field missing"
    elif error["type"] == "extra_forbidden":
        message = _unknown_field(str(path[-1]) if path else "")
    return ConfigProblem(source, line, format_path(path), message)


def _locate(problem: Problem, root: yaml.Node | None, source: str) -> ConfigProblem:
    path, line = _walk(root, problem.path)
    return ConfigProblem(source, line, format_path(path), problem.message)


def _walk(
    root: yaml.Node | None, loc: tuple[str | int, ...]
) -> tuple[tuple[str | int, ...], int | None]:
    """The data path of ``loc`` and the line of the deepest node it reaches.

    Entries of ``loc`` that are not data keys (pydantic's names for union
    members) are dropped; a key absent from its mapping ends the walk at
    that mapping's line, which is where the field is missing.
    """
    node = root
    path: list[str | int] = []
    line = None if root is None else root.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                break
            node = node.value[part]
            line = node.start_mark.line + 1
        elif isinstance(node, yaml.MappingNode) and isinstance(part, str):
            pair = next((p for p in node.value if str(p[0].value) == part), None)
            if pair is None:
                path.append(part)
                break
            line = pair[0].start_mark.line + 1
            node = pair[1]
        else:
            continue
        path.append(part)
    return tuple(path), line


def _unknown_field(name: str) -> str:
    match = difflib.get_close_matches(name, _field_names(), n=1)
    hint = f"; did you mean {match[0]!r}?" if match else ""
    return f"unknown field{hint}"


def _field_names() -> list[str]:
    models = [
        item
        for item in vars(model).values()
        if isinstance(item, type) and issubclass(item, BaseModel)
    ]
    return sorted({name for item in models for name in item.model_fields})


# Files named by the configuration


def _resolve_files(config: Config, base_dir: Path) -> Config:
    listeners = [_resolved(listener, base_dir) for listener in config.listeners]
    return config.model_copy(update={"listeners": listeners})


def _resolved(listener: Listener, base_dir: Path) -> Listener:
    if listener.tls_cert is None or listener.tls_key is None:
        return listener
    return listener.model_copy(
        update={
            "tls_cert": base_dir / listener.tls_cert,
            "tls_key": base_dir / listener.tls_key,
        }
    )


def _file_problems(config: Config) -> Iterator[Problem]:
    for index, listener in enumerate(config.listeners):
        for field in ("tls_cert", "tls_key"):
            file: Path | None = getattr(listener, field)
            if file is None:
                continue
            try:
                with file.open("rb"):
                    pass
            except OSError as exc:
                yield Problem(("listeners", index, field), _os_error(exc))


def _os_error(exc: OSError) -> str:
    return f"cannot read {exc.filename}: {exc.strerror}"
