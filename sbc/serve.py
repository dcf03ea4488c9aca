"""``sbc serve``: one process runs SIP, media, IKE and the admin API.

Everything shares one event loop (uvloop): the node's engines
(`sbc.node.Node`), the reconciler that makes them follow the database
(`web.reconciler`) and the admin API, served by uvicorn as a task of the
same loop, so a route reads the engines' state without locks or threads.

At start: the database is migrated, a ``--config`` file is applied into it
(as ``sbc config apply`` does), the first admin is created when there is no
user (its one-time password goes to stderr, never to the log file), the
static ``--listen`` sockets open, the first reconciliation runs, then the
API starts. SIGINT or SIGTERM stops it all in the reverse order.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from sbc import __version__
from sbc.config.model import Config
from sbc.log import CLI_LOGGER
from sbc.node import Node, NodeSettings
from sbc.secure import node_runtime

if TYPE_CHECKING:
    from sbc.cdr import CallRecord
    from web.app import AdminState
    from web.reconciler import Reconciler

_log = logging.getLogger(CLI_LOGGER)

ADMIN_SHUTDOWN_GRACE = 2
"""Seconds the API's open requests get to finish at stop."""


@dataclass(frozen=True, slots=True)
class ServeOptions:
    data_dir: Path
    node: NodeSettings
    config: Config | None = None
    """A checked ``--config`` file: applied into the database at start; its
    node sections (media, IPsec node) join what the database holds."""
    database_url: str | None = None
    admin_listen: tuple[str, int] | None = ("127.0.0.1", 8080)
    """Where the admin API listens; None: it does not run."""
    node_name: str = ""
    """Which node-local objects are this node's (shared ones always are)."""
    reconcile_interval: float = 5.0


class ServeError(Exception):
    """A start that cannot go on; the message is the one line to print."""


def open_database(options: ServeOptions) -> AdminState:
    """Migrate, apply the ``--config`` file, create the first admin.

    Runs before the event loop (it is blocking work done once). Raises
    ServeError for an unusable database or a file the store refuses.
    """
    from sqlalchemy.exc import SQLAlchemyError

    from web.cli_commands import CLI_ACTOR, bootstrap_admin, open_admin
    from web.services import config as config_service
    from web.services.errors import ServiceError

    try:
        state = open_admin(options.data_dir, options.database_url)
        if options.config is not None:
            with state.sessions.begin() as session:
                counts = config_service.apply_config(
                    session, state.box, options.config, actor=CLI_ACTOR,
                    now=datetime.now(UTC),
                )  # fmt: skip
            _log.info("configuration file stored: %s", _counts(counts))
        password = bootstrap_admin(state)
    except (SQLAlchemyError, OSError) as exc:
        cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        raise ServeError(f"database unusable: {cause}") from None
    except ServiceError as exc:
        raise ServeError(f"configuration refused: {exc.message}") from None
    if password is not None:
        # Straight to stderr: the log file must never hold a password.
        sys.stderr.write(
            "first start: admin user 'admin' created; one-time password "
            f"(shown once, change it): {password}\n"
        )
    return state


def with_default_listeners(options: ServeOptions, state: AdminState) -> ServeOptions:
    """The loopback defaults (port 5060, UDP and TCP, IPv4 and IPv6) as static
    listeners when nothing else would listen for SIP: no ``--listen``, no
    ``--config`` and no listener stored for this node. Decided once, at start."""
    from sqlalchemy import func, select

    from sbc.io.settings import DEFAULT_LISTEN
    from web.db import ConfigObject

    if options.node.transport.listen or options.config is not None:
        return options
    nodes = ("", options.node_name)
    query = select(func.count(ConfigObject.id)).where(
        ConfigObject.kind == "listener", ConfigObject.node.in_(nodes)
    )
    with state.sessions.begin() as session:
        if session.scalar(query):
            return options
    _log.info("no SIP listener stored: listening on the loopback defaults")
    transport = dataclasses.replace(options.node.transport, listen=DEFAULT_LISTEN)
    node = dataclasses.replace(options.node, transport=transport)
    return dataclasses.replace(options, node=node)


async def serve(options: ServeOptions, state: AdminState) -> int:
    """Run until SIGINT or SIGTERM; the exit status."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    records = _CallRecords(options, state)
    node = Node(
        options.node, records, secure_runtime=node_runtime, close_cdr=records.close
    )
    state.node_name = options.node_name
    state.health_checks = {"cdr_writer": records.database.writer.healthy}
    state.snapshot = records.database.snapshot_with(node.snapshot)
    try:
        reconciler = await _start_node(options, state, node)
        async with _admin_api(options, state) as api:
            reconciling = loop.create_task(reconciler.run())
            _settle_garbage_collection()
            _log.info("sbc %s serving; SIGINT or SIGTERM stops it", __version__)
            await _until_stopped(stop, api)
            _log.info("stopping")
            node.events.close()  # ends the event streams the API is serving
        reconciling.cancel()
        await asyncio.gather(reconciling, return_exceptions=True)
        reconciler.unwatch()
    except ServeError as exc:
        _log.error("%s", exc)
        await node.stop()
        return 1
    _log.info("calls in progress, left without a record: %d", len(node.calls()))
    await node.stop()
    _log_counters(node)
    _log.info("stopped")
    return 0


def _settle_garbage_collection() -> None:
    """Keep the collector off what start-up made and lives for good.

    The web stack, the engines and their tables never die; frozen, they
    are no longer walked by every full collection. The thresholds stay at
    their defaults: a young generation of 20,000 objects saved CPU under
    call load but let ended calls' cycles pile up (the soak test's memory
    plateau grew by 13 KiB per call).
    """
    gc.collect()
    gc.freeze()


class _CallRecords:
    """Each finished call to the database (`web.services.cdrs`, counted for
    the metrics) and to ``DATA_DIR/cdr.jsonl``; both write off the loop."""

    def __init__(self, options: ServeOptions, state: AdminState) -> None:
        from sbc.cdr import CdrWriter
        from sbc.io.calls import ThreadedCdrWriter
        from web.services.cdrs import CallRecords

        # Records are stamped with the loop's clock; stored as Unix times.
        offset = time.time() - asyncio.get_running_loop().time()
        self.database = CallRecords(
            state.sessions, options.data_dir, node=options.node_name,
            clock_offset=offset,
        )  # fmt: skip
        self.file = ThreadedCdrWriter(CdrWriter.in_data_dir(options.data_dir), offset)

    def write(self, record: CallRecord) -> None:
        self.database.sink.write(record)
        self.file.write(record)

    def close(self) -> None:
        """Wait for both to store what is queued (blocks: off the loop)."""
        self.database.close()
        self.file.close()


async def _start_node(
    options: ServeOptions, state: AdminState, node: Node
) -> Reconciler:
    """Open the static listeners, then run the stored configuration."""
    from web.reconciler import Reconciler

    try:
        await node.start()
    except OSError as exc:
        raise ServeError(f"cannot listen: {exc}") from None
    state.runtime = node
    reconciler = Reconciler(
        node, state.sessions, state.box, node_name=options.node_name,
        base=options.config, interval=options.reconcile_interval,
    )  # fmt: skip
    reconciler.watch()
    await reconciler.reconcile()
    for (kind, name), reason in reconciler.failures.items():
        _log.error("%s %r not applied: %s", kind, name, reason)
    if reconciler.failures and options.config is not None:
        # The file given on the command line must run as written.
        reconciler.unwatch()
        raise ServeError("the configuration file cannot run on this node")
    engine = node.engine
    if engine is not None:
        _log.info(
            "call engine: %d trunks, %d dial plans; call records to %s",
            len(node.config.trunks),
            len(node.config.dial_plans),
            options.data_dir / "cdr.jsonl",
        )
    return reconciler


@contextlib.asynccontextmanager
async def _admin_api(
    options: ServeOptions, state: AdminState
) -> AsyncIterator[asyncio.Task[None] | None]:
    """The admin API as a task of this loop, stopped on leaving."""
    if options.admin_listen is None:
        _log.info("admin API off")
        yield None
        return
    server, sock = _uvicorn_server(options.admin_listen, state)
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                raise ServeError("the admin API did not start")
            await asyncio.sleep(0.02)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        _log.info("admin API on http://%s:%d/api/v1/docs", shown, port)
        yield task
    finally:
        server.should_exit = True
        await asyncio.gather(task, return_exceptions=True)
        sock.close()


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside a process that owns its signals: SIGINT and SIGTERM
    stop the whole process through its own handlers, not uvicorn's."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _uvicorn_server(
    address: tuple[str, int], state: AdminState
) -> tuple[uvicorn.Server, socket.socket]:
    from web.app import create_app

    sock = _bound_socket(*address)
    config = uvicorn.Config(
        create_app(state),
        lifespan="off",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=ADMIN_SHUTDOWN_GRACE,
    )
    return _EmbeddedServer(config), sock


def _bound_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen for the admin API: {exc}") from None
    return sock


async def _until_stopped(stop: asyncio.Event, api: asyncio.Task[None] | None) -> None:
    """Wait for a signal; an API task that ends by itself stops serve too."""
    waiters: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait())]
    if api is not None:
        waiters.append(asyncio.shield(api))
    _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for waiter in pending:
        waiter.cancel()
    if api is not None and api.done():
        _log.error("the admin API stopped on its own")


def _log_counters(node: Node) -> None:
    snapshot = node.snapshot()
    groups = {**snapshot["sip"], "trunks": snapshot["trunk_services"]}
    for group, numbers in groups.items():
        text = " ".join(f"{key}={value}" for key, value in numbers.items())
        _log.info("counters %s: %s", group, text)


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{name}={count}" for name, count in counts.items())
