"""The ``sbc`` command.

Every subcommand is one :class:`Command` in :data:`COMMANDS`: a name, a help
line, a function that adds its options and a function that runs it. Adding a
command (the admin API, configuration checks) means adding one entry.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sbc import __version__
from sbc.io.settings import (
    DEFAULT_IDLE_TIMEOUT,
    ListenSpec,
    ListenSpecError,
    TransportSettings,
    parse_listen_spec,
)
from sbc.log import CLI_LOGGER, setup_logging

if TYPE_CHECKING:
    from sbc.config.model import Config

LOG_LEVELS = ("debug", "info", "warning", "error")
DEFAULT_ADMIN_LISTEN = "127.0.0.1:8080"

_log = logging.getLogger(CLI_LOGGER)


@dataclass(frozen=True, slots=True)
class Command:
    """One ``sbc`` subcommand."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``sbc`` console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sbc",
        description="Secure SIP trunk appliance: a session border controller "
        "with its own IPsec layer.",
    )
    parser.add_argument("--version", action="version", version=f"sbc {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        sub = subparsers.add_parser(
            command.name, help=command.help, description=command.help
        )
        command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


# sbc version


def _version_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # takes no options


def _run_version(args: argparse.Namespace) -> int:
    del args
    sys.stdout.write(f"sbc {__version__}\n")
    return 0


# sbc serve


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="a configuration file (docs/configuration.md), checked at start and "
        "stored in the database as `sbc config apply` does; the node then runs "
        "what the database holds (its media and ipsec sections from FILE, "
        "unless stored at /api/v1/node/media and /api/v1/node/ipsec)",
    )
    parser.add_argument(
        "--listen",
        action="append",
        type=_listen_spec,
        metavar="TRANSPORT:HOST:PORT",
        help="a static SIP listener besides those stored in the database (not "
        "with --config): udp:, tcp: or tls: then an IP address (IPv6 in "
        "brackets) and a port (0 picks a free one; default 5060, 5061 for "
        "tls). Repeat for more. When none is given and none is stored: "
        "udp and tcp on 127.0.0.1:5060 and [::1]:5060.",
    )
    parser.add_argument(
        "--admin-listen",
        type=_admin_address,
        default=_admin_address(DEFAULT_ADMIN_LISTEN),
        metavar="HOST:PORT|off",
        help="where the admin API (/api/v1) listens; off: no API "
        f"(default: {DEFAULT_ADMIN_LISTEN})",
    )
    parser.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help="database URL, e.g. postgresql+psycopg://user@host/db "
        "(default: $SBC_DATABASE_URL, else SQLite DATA_DIR/sbc.db)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        metavar="DIR",
        help="holds the SQLite database, the key file that encrypts secrets, "
        "call records (cdr.jsonl) and the log (sbc.log); created if missing "
        "(default: ./data)",
    )
    parser.add_argument(
        "--node-name",
        default="",
        metavar="NAME",
        help="this node's name: it runs the shared objects and the node-local "
        "objects stored under NAME (default: shared objects only)",
    )
    parser.add_argument(
        "--reconcile-interval",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="how often the database is polled for changes made by other "
        "processes; changes through this API apply at once (default: %(default)s)",
    )
    parser.add_argument(
        "--tls-cert",
        type=Path,
        metavar="FILE",
        help="PEM certificate chain for tls: --listen listeners (listeners of "
        "the configuration name their own)",
    )
    parser.add_argument(
        "--tls-key", type=Path, metavar="FILE", help="PEM private key of --tls-cert"
    )
    parser.add_argument(
        "--tls-ca",
        type=Path,
        metavar="FILE",
        help="PEM CA bundle to verify peers on outbound TLS (default: system CAs)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=_positive_float,
        default=DEFAULT_IDLE_TIMEOUT,
        metavar="SECONDS",
        help="close TCP/TLS connections idle this long (default: %(default)s)",
    )
    parser.add_argument(
        "--no-route-delay",
        type=_non_negative_float,
        default=0.0,
        metavar="SECONDS",
        help="until a trunk is first configured: hold an INVITE this long before "
        "answering 480 (no route); a CANCEL in that time gets 487 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--no-answer-timeout",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="cancel an outgoing INVITE that got no response for this long and "
        "try the next candidate (Timer C; default 180)",
    )
    parser.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        default="info",
        help="lowest level logged (default: %(default)s); debug logs whole SIP "
        "messages with credentials redacted",
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="log line format: text, or json (one JSON object per line with the "
        "context fields; credentials redacted as in text). Default: "
        "$SBC_LOG_FORMAT, else text",
    )


def _run_serve(args: argparse.Namespace) -> int:
    from sbc.node import NodeSettings
    from sbc.serve import (
        ServeError,
        ServeOptions,
        open_database,
        serve,
        with_default_listeners,
    )

    listen: tuple[ListenSpec, ...] = tuple(args.listen or ())
    uses_tls = any(spec.transport == "TLS" for spec in listen)
    if uses_tls and (args.tls_cert is None or args.tls_key is None):
        sys.stderr.write("sbc serve: tls: listeners need --tls-cert and --tls-key\n")
        return 2
    config = None
    if args.config is not None:
        if args.listen:
            # Trunks know listeners by their names in the file.
            sys.stderr.write("sbc serve: --listen cannot be used with --config\n")
            return 2
        config = _load_config(args.config)
        if config is None:
            return 2
    args.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    setup_logging(args.log_level.upper(), args.data_dir, args.log_format)
    transport = TransportSettings(
        listen=listen,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
        tls_ca=args.tls_ca,
        idle_timeout=args.idle_timeout,
    )
    options = ServeOptions(
        data_dir=args.data_dir,
        node=NodeSettings(transport, args.no_route_delay, args.no_answer_timeout),
        config=config,
        database_url=args.db,
        admin_listen=args.admin_listen,
        node_name=args.node_name,
        reconcile_interval=args.reconcile_interval,
    )
    try:
        state = open_database(options)
    except ServeError as exc:
        sys.stderr.write(f"sbc serve: {exc}\n")
        return 1
    options = with_default_listeners(options, state)
    return _run_on_uvloop(serve(options, state))


def _load_config(path: Path) -> Config | None:
    """A checked configuration file; None after reporting its problems."""
    from sbc.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stderr.write(f"{problem}\n")
        return None


def _run_on_uvloop(main_coroutine: Coroutine[Any, Any, int]) -> int:
    import uvloop

    result: int = uvloop.run(main_coroutine)
    return result


# sbc config check


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="config_action", metavar="ACTION")
    actions.required = True
    check = actions.add_parser(
        "check",
        help="check a configuration file and print every problem with its "
        "file, line and field; exit 0 when it is good, 1 when not",
    )
    check.add_argument(
        "file", type=Path, metavar="FILE", help="a YAML configuration file"
    )
    apply = actions.add_parser(
        "apply",
        help="check FILE, then make the stored configuration equal to it "
        "(objects not in FILE are deleted); every change is audited",
    )
    apply.add_argument(
        "file", type=Path, metavar="FILE", help="a YAML configuration file"
    )
    _database_arguments(apply)
    export = actions.add_parser("export", help="print the stored configuration as YAML")
    export.add_argument(
        "--reveal-secrets",
        action="store_true",
        help="write passwords and keys in clear (default: masked, and such a "
        "file cannot be applied back)",
    )
    _database_arguments(export)


def _run_config(args: argparse.Namespace) -> int:
    if args.config_action == "apply":
        return _database_command(_run_config_apply, args)
    if args.config_action == "export":
        return _database_command(_run_config_export, args)
    from sbc.config import check_config_file

    problems = check_config_file(args.file)
    for problem in problems:
        sys.stdout.write(f"{problem}\n")
    if not problems:
        sys.stdout.write(f"{args.file}: ok\n")
    return 1 if problems else 0


def _run_config_export(args: argparse.Namespace) -> int:
    from web.cli_commands import config_export

    sys.stdout.write(config_export(args.data_dir, args.reveal_secrets, url=args.db))
    return 0


def _run_config_apply(args: argparse.Namespace) -> int:
    from sbc.config import ConfigError
    from web.cli_commands import config_apply
    from web.services.errors import ServiceError

    try:
        counts = config_apply(args.data_dir, args.file, url=args.db)
    except ConfigError as exc:
        for problem in exc.problems:
            sys.stdout.write(f"{problem}\n")
        return 1
    except ServiceError as exc:
        sys.stdout.write(f"{args.file}: {exc.message}\n")
        return 1
    summary = " ".join(f"{name}={count}" for name, count in counts.items())
    sys.stdout.write(f"{args.file}: applied ({summary})\n")
    return 0


# sbc db upgrade, sbc user add


def _database_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path("data"),
        metavar="DIR",
        help="holds the SQLite database and the secret key file (default: ./data)",
    )
    parser.add_argument(
        "--db",
        metavar="URL",
        default=None,
        help="database URL, e.g. postgresql+psycopg://user@host/db "
        "(default: $SBC_DATABASE_URL, else SQLite in the data directory)",
    )


def _database_command(
    run: Callable[[argparse.Namespace], int], args: argparse.Namespace
) -> int:
    """Run a command on the admin database, reporting an unusable one in a line."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        args.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        return run(args)
    except (SQLAlchemyError, OSError) as exc:
        # The first line names the cause; the rest (SQL, URLs) stays out.
        cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        sys.stderr.write(f"sbc {args.command}: database unusable: {cause}\n")
        return 1


def _db_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="db_action", metavar="ACTION")
    actions.required = True
    upgrade = actions.add_parser(
        "upgrade", help="apply every pending database migration"
    )
    _database_arguments(upgrade)


def _run_db(args: argparse.Namespace) -> int:
    return _database_command(_run_db_upgrade, args)


def _run_db_upgrade(args: argparse.Namespace) -> int:
    from web.cli_commands import db_upgrade

    sys.stdout.write(f"{db_upgrade(args.data_dir, url=args.db)}: up to date\n")
    return 0


def _user_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="user_action", metavar="ACTION")
    actions.required = True
    add = actions.add_parser(
        "add",
        help="create an admin-plane user; the password is read from standard "
        "input with --password-stdin, else generated and printed once",
    )
    add.add_argument("username", metavar="NAME", help="the new user's login name")
    add.add_argument(
        "--role",
        choices=("admin", "operator", "viewer"),
        default="viewer",
        help="admin: everything; operator: reads and runtime actions; "
        "viewer: reads only (default: %(default)s)",
    )
    add.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password (at least 12 characters) from standard input",
    )
    _database_arguments(add)


def _run_user(args: argparse.Namespace) -> int:
    return _database_command(_run_user_add, args)


def _run_user_add(args: argparse.Namespace) -> int:
    from web.cli_commands import user_add
    from web.services.errors import ServiceError
    from web.services.users import Role

    password = sys.stdin.readline().rstrip("\r\n") if args.password_stdin else None
    try:
        generated = user_add(
            args.data_dir, args.username, Role(args.role), password, url=args.db
        )
    except ServiceError as exc:
        sys.stderr.write(f"sbc user add: {exc.message}\n")
        return 1
    sys.stdout.write(f"user {args.username} ({args.role}) created\n")
    if generated is not None:
        sys.stdout.write(f"password (shown once): {generated}\n")
    return 0


# Argument types


def _listen_spec(text: str) -> ListenSpec:
    try:
        return parse_listen_spec(text)
    except ListenSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _admin_address(text: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (IPv6 in brackets) or ``off``."""
    if text == "off":
        return None
    try:
        spec = parse_listen_spec(f"tcp:{text}")
    except ListenSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if f":{spec.port}" not in text:
        raise argparse.ArgumentTypeError(f"{text!r}: give the port as HOST:PORT")
    return spec.host, spec.port


def _positive_float(text: str) -> float:
    value = _non_negative_float(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be greater than 0")
    return value


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a finite number >= 0")
    return value


COMMANDS: tuple[Command, ...] = (
    Command(
        "serve",
        "run SIP, media, IPsec and the admin API until stopped",
        _serve_arguments,
        _run_serve,
    ),
    Command(
        "config",
        "check, apply or export configuration",
        _config_arguments,
        _run_config,
    ),
    Command(
        "db",
        "upgrade the admin database",
        _db_arguments,
        _run_db,
    ),
    Command(
        "user",
        "add admin-plane users",
        _user_arguments,
        _run_user,
    ),
    Command("version", "print the version and exit", _version_arguments, _run_version),
)
"""Every subcommand, in the order ``sbc --help`` lists them."""


if __name__ == "__main__":
    sys.exit(main())
