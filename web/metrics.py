"""Prometheus metrics built from the node's counter snapshot.

:class:`SnapshotCollector` calls a snapshot function at every scrape and
turns its plain dicts into metric families; it keeps no state of its own,
so what the engines count is what Prometheus sees. The snapshot is one dict
with these sections, each optional (a node without IPsec has no ``ipsec``):

``sip``
    `sbc.io.endpoint.SipEndpoint.snapshot`: ``{"sip": {...}, "udp": {...},
    "tcp": {...}, "tls": {...}}``.
``calls``
    ``{"active": n, "trunks": {trunk: {"active_calls", "admitted",
    "rejected_max_calls", "rejected_max_cps"}}}`` (`sbc.admission.AdmissionStats`
    per trunk) plus what :class:`CallOutcomes` counts from finished calls:
    ``"outcomes": {trunk: {"in"|"out": {disposition: n}}}`` and
    ``"final_responses": {status: n}``.
``trunks``
    ``{trunk: {"state": "up" | "down" | ...}}``.
``trunk_services``
    ``{event: n}``: registration and keepalive events of every trunk
    (``registered``, ``registration_failed``, ``trunk_down`` ...).
``node``
    ``{"applies": n, "apply_failures": n, "events_published": n,
    "events_lost": n}``.
``ike``
    ``{"ike_sas": n, "established": n, "child_sas": n, "drops": {reason: n},
    "exchanges": {exchange: n}, "failures": {reason: n}}``.
``ipsec``
    `ipsec.dataplane.plane.DataPlane.stats`.
``media``
    ``{"sessions": n, "totals": {key: n}}``: the keys of
    `sbc.media.counters.StreamCounters.snapshot` summed over every leg of
    every call since start (ended calls included, so the totals only grow).
``cdr``
    `web.services.cdrs.DatabaseCdrWriter.snapshot`.

Every counter must only grow while the process runs (Prometheus reads a
drop as a restart). Per-SA series carry the SPI as a label: a rekey starts
new series and the old ones stop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from sbc.b2bua.settings import CallRecordWriter
from sbc.cdr import CallRecord

_log = logging.getLogger("sbc.web.metrics")

Snapshot = Callable[[], Mapping[str, Any] | None]
"""The node's counters; None while no node runs."""
Section = Mapping[str, Any]


class SnapshotCollector(Collector):
    """Metric families read from ``snapshot()`` at each scrape.

    Call ``collect`` on the thread that runs the engines (the event loop):
    the snapshot reads their live counters.
    """

    def __init__(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def describe(self) -> Iterable[Metric]:
        # Registration must not take a snapshot: the node may not run yet.
        return []

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("sbc_node_up", "1 when the node's counters were read")
        snapshot = self._read()
        up.add_metric([], 0 if snapshot is None else 1)
        yield up
        if snapshot is None:
            return
        for name, families in _SECTIONS.items():
            section = snapshot.get(name)
            if isinstance(section, Mapping):
                yield from families(section)

    def _read(self) -> Mapping[str, Any] | None:
        try:
            return self._snapshot()
        except Exception:
            # A scrape must answer even when one engine's snapshot breaks.
            _log.exception("node snapshot failed")
            return None


def metrics_registry(snapshot: Snapshot) -> CollectorRegistry:
    """A registry of the node's metrics and the process's own (memory, CPU)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


# SIP endpoint


def _sip(section: Section) -> Iterator[Metric]:
    layers = _mapping(section.get("sip"))
    for key, value in layers.items():
        if key == "open_connections":
            yield _gauge("sbc_sip_open_connections", "Open TCP/TLS connections", value)
        else:
            text = f"SIP layer counter {key}"
            yield _counter(f"sbc_sip_{key}", text, value)
    yield from _transports(section)


def _transports(section: Section) -> Iterator[Metric]:
    labels = ["transport"]
    received = CounterMetricFamily(
        "sbc_sip_transport_received", "Datagrams or messages received", labels=labels
    )
    sent = CounterMetricFamily(
        "sbc_sip_transport_sent", "Datagrams or messages sent", labels=labels
    )
    keepalives = CounterMetricFamily(
        "sbc_sip_transport_keepalives", "Keepalives (CRLF) received", labels=labels
    )
    drops = CounterMetricFamily(
        "sbc_sip_transport_drops",
        "Input dropped, by reason",
        labels=[*labels, "reason"],
    )
    for transport, counters in section.items():
        if transport == "sip" or not isinstance(counters, Mapping):
            continue
        received.add_metric([transport], _number(counters.get("received")))
        sent.add_metric([transport], _number(counters.get("sent")))
        keepalives.add_metric([transport], _number(counters.get("keepalives")))
        for key, value in counters.items():
            if key.startswith("drop."):
                drops.add_metric([transport, key[5:]], _number(value))
    yield from (received, sent, keepalives, drops)


# Calls and trunks

_ADMISSION = (
    ("admitted", "sbc_trunk_calls_admitted", "Calls admitted on the trunk"),
    ("rejected_max_calls", "sbc_trunk_calls_rejected_max_calls", "Calls refused at max_calls"),
    ("rejected_max_cps", "sbc_trunk_calls_rejected_max_cps", "Calls refused at max_cps"),
)  # fmt: skip


def _calls(section: Section) -> Iterator[Metric]:
    yield _gauge("sbc_calls_active", "Calls in progress", section.get("active"))
    trunks = _mapping(section.get("trunks"))
    active = GaugeMetricFamily(
        "sbc_trunk_calls_active", "Calls in progress on the trunk", labels=["trunk"]
    )
    for trunk, stats in trunks.items():
        active.add_metric([trunk], _number(_mapping(stats).get("active_calls")))
    yield active
    for key, name, text in _ADMISSION:
        family = CounterMetricFamily(name, text, labels=["trunk"])
        for trunk, stats in trunks.items():
            family.add_metric([trunk], _number(_mapping(stats).get(key)))
        yield family
    yield from _outcomes(section)


def _outcomes(section: Section) -> Iterator[Metric]:
    ended = CounterMetricFamily(
        "sbc_calls_ended",
        "Finished calls by trunk, direction (in: A-leg trunk, out: B-leg trunk) "
        "and disposition",
        labels=["trunk", "direction", "disposition"],
    )
    for trunk, directions in _mapping(section.get("outcomes")).items():
        for direction, dispositions in _mapping(directions).items():
            for disposition, count in _mapping(dispositions).items():
                ended.add_metric([trunk, direction, disposition], _number(count))
    yield ended
    responses = CounterMetricFamily(
        "sbc_call_final_responses",
        "Final responses sent on A-legs, by status code",
        labels=["code"],
    )
    for code, count in _mapping(section.get("final_responses")).items():
        responses.add_metric([str(code)], _number(count))
    yield responses


def _trunks(section: Section) -> Iterator[Metric]:
    up = GaugeMetricFamily("sbc_trunk_up", "1 when the trunk is up", labels=["trunk"])
    state = GaugeMetricFamily(
        "sbc_trunk_state",
        "The trunk's current state (value 1)",
        labels=["trunk", "state"],
    )
    for trunk, view in section.items():
        current = str(_mapping(view).get("state", "unknown"))
        up.add_metric([trunk], 1 if current == "up" else 0)
        state.add_metric([trunk, current], 1)
    yield from (up, state)


def _trunk_services(section: Section) -> Iterator[Metric]:
    events = CounterMetricFamily(
        "sbc_trunk_service_events",
        "Registration and keepalive events of all trunks",
        labels=["event"],
    )
    for event, count in section.items():
        events.add_metric([event], _number(count))
    yield events


def _node(section: Section) -> Iterator[Metric]:
    for key, value in section.items():
        yield _counter(f"sbc_node_{key}", f"Node counter {key}", value)


# IKE and the IPsec data plane


def _ike(section: Section) -> Iterator[Metric]:
    exchanges = CounterMetricFamily(
        "sbc_ike_exchanges", "IKE exchanges completed, by type", labels=["exchange"]
    )
    for exchange, count in _mapping(section.get("exchanges")).items():
        exchanges.add_metric([exchange], _number(count))
    failures = CounterMetricFamily(
        "sbc_ike_failures", "IKE negotiations failed, by reason", labels=["reason"]
    )
    for reason, count in _mapping(section.get("failures")).items():
        failures.add_metric([reason], _number(count))
    drops = CounterMetricFamily(
        "sbc_ike_drops", "IKE messages dropped unanswered, by reason", labels=["reason"]
    )
    for reason, count in _mapping(section.get("drops")).items():
        drops.add_metric([reason], _number(count))
    yield from (exchanges, failures, drops)
    yield _gauge("sbc_ike_sas", "IKE_SAs, established or not", section.get("ike_sas"))
    established = section.get("established")
    yield _gauge("sbc_ike_sas_established", "IKE_SAs established", established)
    yield _gauge("sbc_child_sas", "CHILD_SAs installed", section.get("child_sas"))


def _ipsec(section: Section) -> Iterator[Metric]:
    yield from _ipsec_paths(_mapping(section.get("paths")))
    yield from _ipsec_sas(section)
    before = CounterMetricFamily(
        "sbc_ipsec_drops_before_sa",
        "Packets dropped before an SA was found, by reason",
        labels=["reason"],
    )
    for reason, count in _mapping(section.get("before_sa")).items():
        before.add_metric([reason], _number(count))
    yield before


def _ipsec_paths(paths: Section) -> Iterator[Metric]:
    labels = ["path", "direction"]
    packets = CounterMetricFamily(
        "sbc_ipsec_path_packets", "Packets on a data path", labels=labels
    )
    octets = CounterMetricFamily(
        "sbc_ipsec_path_bytes", "Bytes on a data path", labels=labels
    )
    drops = CounterMetricFamily(
        "sbc_ipsec_path_drops", "Packets a data path dropped", labels=["path", "reason"]
    )
    for path, counters in paths.items():
        view = _mapping(counters)
        for direction in ("in", "out"):
            packets.add_metric(
                [path, direction], _number(view.get(f"packets_{direction}"))
            )
            octets.add_metric(
                [path, direction], _number(view.get(f"bytes_{direction}"))
            )
        for reason, count in _mapping(view.get("drops")).items():
            drops.add_metric([path, reason], _number(count))
    yield from (packets, octets, drops)


def _ipsec_sas(section: Section) -> Iterator[Metric]:
    labels = ["direction", "spi"]
    installed = GaugeMetricFamily(
        "sbc_ipsec_sas", "SAs installed in the data plane", labels=["direction"]
    )
    packets = CounterMetricFamily(
        "sbc_ipsec_sa_packets", "Packets protected or accepted by an SA", labels=labels
    )
    octets = CounterMetricFamily(
        "sbc_ipsec_sa_bytes",
        "Payload bytes protected or accepted by an SA",
        labels=labels,
    )
    drops = CounterMetricFamily(
        "sbc_ipsec_sa_drops", "Packets an SA dropped", labels=[*labels, "reason"]
    )
    for direction in ("inbound", "outbound"):
        sas = _mapping(section.get(direction))
        installed.add_metric([direction], len(sas))
        for spi, counters in sas.items():
            view, label = _mapping(counters), _spi_label(spi)
            packets.add_metric([direction, label], _number(view.get("packets")))
            octets.add_metric([direction, label], _number(view.get("bytes")))
            for reason, count in _mapping(view.get("drops")).items():
                drops.add_metric([direction, label, reason], _number(count))
    yield from (installed, packets, octets, drops)


def _spi_label(spi: object) -> str:
    return f"0x{spi:08x}" if isinstance(spi, int) else str(spi)


# Media relay

_MEDIA_COUNTERS = (
    ("packets_received", "RTP packets received from the legs"),
    ("bytes_received", "RTP bytes received from the legs"),
    ("packets_sent", "RTP packets sent to the legs"),
    ("bytes_sent", "RTP bytes sent to the legs"),
    ("rtcp_received", "RTCP packets received"),
    ("rtcp_sent", "RTCP packets sent"),
    ("packets_lost", "RTP packets lost on the way to the relay (RFC 3550 A.3)"),
)


def _media(section: Section) -> Iterator[Metric]:
    yield _gauge(
        "sbc_media_sessions", "Calls with relayed media", section.get("sessions")
    )
    totals = _mapping(section.get("totals"))
    for key, text in _MEDIA_COUNTERS:
        yield _counter(f"sbc_media_{key}", text, totals.get(key))
    drops = CounterMetricFamily(
        "sbc_media_drops", "Media packets the relay dropped", labels=["reason"]
    )
    for key, count in totals.items():
        if key.startswith("drop."):
            drops.add_metric([key[5:]], _number(count))
    yield drops


# Call records


def _cdr(section: Section) -> Iterator[Metric]:
    yield _counter(
        "sbc_cdr_committed",
        "Call records committed to the database",
        section.get("committed"),
    )
    yield _counter(
        "sbc_cdr_diverted",
        "Call records the database could not take, kept in the file instead",
        section.get("diverted"),
    )
    yield _gauge(
        "sbc_cdr_queued", "Call records waiting for their commit", section.get("queued")
    )


_SECTIONS: dict[str, Callable[[Section], Iterator[Metric]]] = {
    "sip": _sip,
    "calls": _calls,
    "trunks": _trunks,
    "trunk_services": _trunk_services,
    "node": _node,
    "ike": _ike,
    "ipsec": _ipsec,
    "media": _media,
    "cdr": _cdr,
}


def _mapping(value: object) -> Mapping[Any, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: object) -> float:
    # A missing or odd value reads as 0 rather than failing the scrape.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return float(value)


def _gauge(name: str, text: str, value: object) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=_number(value))


def _counter(name: str, text: str, value: object) -> CounterMetricFamily:
    return CounterMetricFamily(name, text, value=_number(value))


# Outcomes of finished calls


class CallOutcomes:
    """A call-record writer that counts outcomes, then passes records on.

    Put it between the call engine and the real writer; its ``section()``
    is the ``outcomes`` and ``final_responses`` part of the ``calls``
    snapshot. Runs on the event loop, like the engine that writes to it.
    """

    def __init__(self, inner: CallRecordWriter) -> None:
        self._inner = inner
        self._outcomes: dict[str, dict[str, dict[str, int]]] = {}
        self._final_responses: dict[int, int] = {}

    def write(self, record: CallRecord) -> None:
        disposition = record.disposition.value
        for direction, trunk in (("in", record.a_trunk), ("out", record.b_trunk)):
            if trunk is not None:
                counts = self._outcomes.setdefault(trunk, {}).setdefault(direction, {})
                counts[disposition] = counts.get(disposition, 0) + 1
        status = record.final_status
        self._final_responses[status] = self._final_responses.get(status, 0) + 1
        self._inner.write(record)

    def close(self) -> None:
        close = getattr(self._inner, "close", None)
        if close is not None:
            close()

    def section(self) -> dict[str, Any]:
        """Copies, safe to hand to another thread."""
        outcomes = {
            trunk: {d: dict(counts) for d, counts in directions.items()}
            for trunk, directions in self._outcomes.items()
        }
        return {"outcomes": outcomes, "final_responses": dict(self._final_responses)}
