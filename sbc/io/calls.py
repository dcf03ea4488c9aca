"""The call engine inside ``sbc serve --config``.

The B2BUA (`sbc.b2bua.B2bua`) becomes the transaction user of the
endpoint's transaction layer once the listeners are bound, so that Via and
Contact carry the ports really in use. Finished calls go to
``DATA_DIR/cdr.jsonl`` through a writer that fsyncs on its own thread, a
batch of records at a time, never on the event loop.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence

from sbc.b2bua import B2bua, B2buaSettings, CallRecordWriter, LocalEndpoint
from sbc.b2bua.media import MediaAnchor
from sbc.cdr import CallRecord, CdrWriter
from sbc.config.model import Config
from sbc.io.endpoint import SipEndpoint
from sbc.io.media_glue import (
    ArrivalMemo,
    MediaCdr,
    MediaFirstUser,
    leg_setup,
    media_relay,
    trunk_policy,
)
from sbc.io.settings import ListenSpec
from sbc.log import TRANSPORT_LOGGER
from sbc.sip.events import RequestReceived

_log = logging.getLogger(TRANSPORT_LOGGER)


class ThreadedCdrWriter:
    """Writes records in order on a thread of its own, many per fsync.

    `CdrWriter` blocks on fsync for milliseconds, which the event loop must
    not wait for, and every fsync costs the kernel about as much CPU however
    little it syncs. So the thread waits ``sync_interval`` after the first
    record of a batch, and the records of the calls that end meanwhile share
    one write and one fsync: a record is on disk about ``sync_interval``
    plus one fsync after its call ended. The engine stamps records with the
    loop's monotonic clock; ``clock_offset`` (wall clock minus loop clock)
    makes them Unix times on disk.
    """

    def __init__(
        self,
        writer: CdrWriter,
        clock_offset: float = 0.0,
        *,
        sync_interval: float = 0.05,
    ) -> None:
        self._writer = writer
        self._clock_offset = clock_offset
        self._sync_interval = sync_interval
        # None asks the thread to write what is queued and stop.
        self._queue: queue.SimpleQueue[CallRecord | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="cdr", daemon=True)
        self._thread.start()

    def write(self, record: CallRecord) -> None:
        self._queue.put(record)

    def close(self) -> None:
        """Wait for the records still queued, then close the file."""
        self._queue.put(None)
        self._thread.join()
        self._writer.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            first = self._queue.get()
            if first is None:
                return
            time.sleep(self._sync_interval)
            batch = [first]
            while not self._queue.empty():
                record = self._queue.get()
                if record is None:
                    stopping = True
                    break
                batch.append(record)
            self._write_batch([self._in_unix_time(record) for record in batch])

    def _write_batch(self, records: list[CallRecord]) -> None:
        try:
            self._writer.write_all(records)
        except ValueError:
            # A record JSON cannot carry must not cost the others theirs.
            for record in records:
                self._write_one(record)
        except OSError:
            # A full or failed disk must not stop calls; the log says so.
            _log.exception("%d call records not written", len(records))

    def _write_one(self, record: CallRecord) -> None:
        try:
            self._writer.write(record)
        except (OSError, ValueError):
            _log.exception("call record of %s not written", record.call_id)

    def _in_unix_time(self, record: CallRecord) -> CallRecord:
        return record.shifted(self._clock_offset)


def local_endpoints(
    config: Config, listening: Sequence[ListenSpec]
) -> tuple[LocalEndpoint, ...]:
    """The engine's Via/Contact address per transport, with bound ports.

    ``listening`` is in the order of ``config.listeners`` (the endpoint
    opens them in that order); the first listener of a transport serves it.
    """
    endpoints: dict[str, LocalEndpoint] = {}
    for endpoint in listener_endpoints(config, listening):
        endpoints.setdefault(endpoint.transport, endpoint)
    return tuple(endpoints.values())


def listener_endpoints(
    config: Config, listening: Sequence[ListenSpec]
) -> tuple[LocalEndpoint, ...]:
    """Every listener's Via/Contact address, with bound ports, in order."""
    return tuple(
        LocalEndpoint(listener.name, bound.host, bound.port, bound.transport)
        for listener, bound in zip(config.listeners, listening, strict=True)
    )


def arrival_listener(
    endpoint: SipEndpoint, config: Config
) -> Callable[[RequestReceived], str | None]:
    """The configured name of the listener the request in hand arrived on.

    Trunks are told apart by listener as well as by source address
    (docs/configuration.md), so the engine must know which socket an INVITE
    came in on; the endpoint knows it while the request is being handled.
    """
    names = {
        bound: listener.name
        for listener, bound in zip(config.listeners, endpoint.listening, strict=True)
    }

    def listener_of(event: RequestReceived) -> str | None:
        # Outside a receive (or for another transport) nothing is known.
        arrival = endpoint.arrival
        if arrival is None or arrival.transport != event.transport:
            return None
        return names.get(arrival)

    return listener_of


def attach_call_engine(
    endpoint: SipEndpoint,
    config: Config,
    cdr: CallRecordWriter,
    *,
    no_answer_timeout: float | None = None,
) -> B2bua:
    """Make a B2BUA the transaction user of ``endpoint`` (started already).

    Call this right after `SipEndpoint.start` returns, with no await in
    between, so that no request reaches the default core meanwhile.
    """
    settings = dataclasses.replace(
        B2buaSettings.from_config(config),
        endpoints=local_endpoints(config, endpoint.listening),
        listener_endpoints=listener_endpoints(config, endpoint.listening),
    )
    if no_answer_timeout is not None:
        settings = dataclasses.replace(settings, no_answer_timeout=no_answer_timeout)
    if config.media.address is not None:
        address = str(config.media.address)
        return _attach_with_media(endpoint, config, settings, cdr, address)
    # Tags, Call-IDs and branches must not be guessable (RFC 3261 §19.3).
    engine = B2bua(
        endpoint.transactions,
        config,
        settings,
        random.SystemRandom(),
        cdr,
        arrival=arrival_listener(endpoint, config),
    )
    endpoint.user = engine
    return engine


def _attach_with_media(
    endpoint: SipEndpoint,
    config: Config,
    settings: B2buaSettings,
    cdr: CallRecordWriter,
    address: str,
) -> B2bua:
    """The engine with every call's SDP anchored on the media relay."""
    anchor = MediaAnchor(os.urandom, trunk_policy=trunk_policy(config))
    relay = media_relay(config.media, anchor, endpoint.wake)
    arrival = ArrivalMemo(arrival_listener(endpoint, config))
    engine = B2bua(
        endpoint.transactions,
        config,
        settings,
        random.SystemRandom(),
        MediaCdr(cdr, anchor),
        arrival=arrival,
        bodies=anchor,
        route_chosen=anchor.route_chosen,
    )
    anchor.end_calls_with(engine.end_call)
    # A held INVITE is handed over from the endpoint's timer, where internal
    # errors are caught; waking the endpoint re-arms that timer.
    endpoint.user = MediaFirstUser(
        engine,
        endpoint.transactions,
        anchor,
        relay,
        leg_setup(config, address),
        arrival,
        wake=endpoint.wake,
    )
    return engine
