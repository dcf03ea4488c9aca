"""Two established IKE_SA engines, a lossy in-memory wire and two ESP data planes.

The data planes are built only from the engines' events, with the ESP engine
(ipsec/esp, written independently) as the oracle: after every datagram the
harness can send one packet each way on the outbound SA each side uses and
open it on the other side, which is how "traffic never stops" is checked.
"""

import random
from collections import deque

from ipsec.esp import InboundSA, Opened, OutboundSA
from ipsec.ike.events import (
    ChildSaDeleted,
    ChildSaEstablished,
    ChildSaOutboundSwitched,
    IkeSaCreatedByRekey,
    IkeSaRekeyed,
)
from ipsec.ike.ike_sa import IkeSa
from ipsec.ike.message import decode_header
from ipsec.ike.tasks.base import NONCE_SIZE

from .test_ike_sa import INITIATOR_ID, RESPONDER_ID, make_config
from .test_ike_to_esp import esp_configs


class ScriptedRandom:
    """Seeded randomness whose next nonces can be forced (C28 nonce orders).

    Only nonces and, with PFS, Curve25519 keys draw NONCE_SIZE octets; the
    tests that force nonces use no PFS.
    """

    def __init__(self, seed):
        self._generator = random.Random(seed)
        self.nonces = deque()
        self.drawn = []
        """Every draw, so a test can recompute what a key was made from."""

    def __call__(self, size):
        if size == NONCE_SIZE and self.nonces:
            drawn = self.nonces.popleft()
        else:
            drawn = self._generator.randbytes(size)
        self.drawn.append(drawn)
        return drawn


class DataPlane:
    """One side's SAD as the events describe it.

    ``active`` holds the outbound SAs in use, one per CHILD_SA, keyed by the
    inbound SPI of their pair; ``standby`` those installed but not yet used
    (a rekey responder waits for the Delete of the old pair).
    """

    def __init__(self):
        self.inbound = {}
        self.active = {}
        self.standby = {}
        self.replaces = {}
        self.fresh = set()
        """New (not rekeyed) CHILD_SAs we answered: the peer installs them
        only when our response arrives, so traffic on them may start late."""

    def apply(self, event):
        if isinstance(event, ChildSaEstablished):
            self._install(event)
        elif isinstance(event, ChildSaOutboundSwitched):
            self.active[event.inbound_spi] = self.standby.pop(event.inbound_spi)
            self.active.pop(self.replaces.pop(event.inbound_spi, None), None)
        elif isinstance(event, ChildSaDeleted):
            for table in (self.inbound, self.active, self.standby, self.replaces):
                table.pop(event.inbound_spi, None)
            self.fresh.discard(event.inbound_spi)

    def _install(self, event):
        out_config, in_config = esp_configs(event)
        self.inbound[event.inbound_spi] = InboundSA(in_config, 0.0)
        outbound = (OutboundSA(out_config, 0.0), event.outbound_spi)
        if not event.outbound_active:
            self.standby[event.inbound_spi] = outbound
            self.replaces[event.inbound_spi] = event.rekeyed_spi
            return
        self.active[event.inbound_spi] = outbound
        self.active.pop(event.rekeyed_spi, None)  # the rekeyer switches at once
        if event.rekeyed_spi is None and not event.is_initiator:
            self.fresh.add(event.inbound_spi)

    @property
    def outbound_spis(self):
        return sorted(spi for _, spi in self.active.values())

    def send_all(self, payload):
        """One packet on every outbound SA in use, with its pair's SPI."""
        assert self.active, "no outbound SA: traffic stopped"
        return [
            (inbound_spi, sa.seal(payload, 17, 0.0))
            for inbound_spi, (sa, _) in self.active.items()
        ]

    def receive(self, packet):
        spi = packet[:4]
        assert spi in self.inbound, f"no inbound SA {spi.hex()}: traffic stopped"
        opened = self.inbound[spi].open(packet, 0.0)
        assert isinstance(opened, Opened), opened
        return opened.payload


class Side:
    """One peer: its IKE_SA engines (several across an IKE_SA rekey) and SAD.

    ``sa`` is the engine that holds the CHILD_SAs; datagrams go to the engine
    whose SPIs they carry, as the daemon's SA manager routes them.
    """

    def __init__(self, name, sa, randomness):
        self.name = name
        self.sa = sa
        self.engines = [sa]
        self.random = randomness
        self.plane = DataPlane()
        self.events = []
        self.unknown_spis = 0

    def pump_events(self):
        for engine in list(self.engines):
            while (event := engine.next_event()) is not None:
                self.events.append(event)
                self.plane.apply(event)
                if isinstance(event, IkeSaCreatedByRekey):
                    self.engines.append(event.ike_sa)
                elif isinstance(event, IkeSaRekeyed):
                    self.sa = self.engine(event.new_spi_i, event.new_spi_r)

    def engine(self, spi_i, spi_r):
        return next(e for e in self.engines if (e.spi_i, e.spi_r) == (spi_i, spi_r))

    def receive(self, data, now):
        if len(self.engines) == 1:  # the handshake learns the SPIs
            self.engines[0].receive_datagram(data, now)
            return
        header = decode_header(data)
        for engine in self.engines:
            if engine.spi_i == header.spi_i and engine.spi_r in (
                header.spi_r,
                bytes(8),
            ):
                engine.receive_datagram(data, now)
                return
        self.unknown_spis += 1  # as the SA manager drops them

    def datagrams_to_send(self):
        return [d for e in self.engines for d in e.datagrams_to_send()]

    def timers(self):
        return [t for e in self.engines if (t := e.get_timer()) is not None]

    def handle_timers(self, now):
        for engine in list(self.engines):
            timer = engine.get_timer()
            if timer is not None and timer <= now:
                engine.handle_timer(now)

    def of_type(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


class Pair:
    """Initiator ``a`` and responder ``b`` of one IKE_SA, plus the wire."""

    def __init__(self, a_changes=None, b_changes=None, seed=1):
        a_random, b_random = ScriptedRandom(seed), ScriptedRandom(seed + 1000)
        a_config = make_config(INITIATOR_ID, RESPONDER_ID, **(a_changes or {}))
        b_config = make_config(RESPONDER_ID, INITIATOR_ID, **(b_changes or {}))
        self.a = Side(
            "a",
            IkeSa(
                a_config,
                is_initiator=True,
                local_spi=bytes.fromhex("1111111111111111"),
                random_bytes=a_random,
            ),
            a_random,
        )
        self.b = Side(
            "b",
            IkeSa(
                b_config,
                is_initiator=False,
                local_spi=bytes.fromhex("2222222222222222"),
                random_bytes=b_random,
            ),
            b_random,
        )
        self.now = 0.0
        self.wire = {"a": deque(), "b": deque()}
        """Datagrams in flight, keyed by the side they travel to."""
        self.a.sa.initiate(self.now)
        self.settle()

    def other(self, side):
        return self.b if side is self.a else self.a

    def collect(self):
        """Move what both engines want to send onto the wire."""
        for _ in range(3):  # new engines may have something to send at once
            for side in (self.a, self.b):
                side.pump_events()
                self.wire[self.other(side).name].extend(side.datagrams_to_send())

    def deliver(self, to, check_traffic=True):
        """Hand the oldest datagram travelling to ``to`` (a Side) over."""
        data = self.wire[to.name].popleft()
        to.receive(data, self.now)
        self.collect()
        if check_traffic:
            self.check_traffic()
        return data

    def drop(self, to):
        return self.wire[to.name].popleft()

    def settle(self, check_traffic=False, limit=200):
        """Deliver everything, oldest first, until the wire is empty."""
        self.collect()
        for _ in range(limit):
            if not self.wire["a"] and not self.wire["b"]:
                return
            for side in (self.b, self.a):
                if self.wire[side.name]:
                    self.deliver(side, check_traffic)
        raise AssertionError("the engines never went quiet")

    def advance(self, now):
        """Let time pass to ``now``, firing every timer due on the way."""
        for _ in range(100):
            due = [t for s in (self.a, self.b) for t in s.timers() if t <= now]
            if not due:
                break
            self.now = max(self.now, min(due))
            for side in (self.a, self.b):
                side.handle_timers(self.now)
            self.collect()
        self.now = max(self.now, now)

    def check_traffic(self):
        """One packet each way on the SAs in use opens on the other side."""
        for sender in (self.a, self.b):
            receiver = self.other(sender)
            payload = f"from {sender.name}".encode()
            for inbound_spi, packet in sender.plane.send_all(payload):
                if inbound_spi in sender.plane.fresh:
                    if packet[:4] not in receiver.plane.inbound:
                        continue  # our answer is still on its way
                    sender.plane.fresh.discard(inbound_spi)
                assert receiver.plane.receive(packet) == payload

    def survivors(self):
        return list(self.a.sa.child_sas), list(self.b.sa.child_sas)

    def assert_one_pair(self):
        """Exactly one CHILD_SA pair, the same on both ends and in both planes."""
        [a_child], [b_child] = self.survivors()
        assert a_child.inbound_spi == b_child.outbound_spi
        assert a_child.outbound_spi == b_child.inbound_spi
        assert set(self.a.plane.inbound) == {a_child.inbound_spi}
        assert set(self.b.plane.inbound) == {b_child.inbound_spi}
        assert self.a.plane.outbound_spis == [a_child.outbound_spi]
        assert self.b.plane.outbound_spis == [b_child.outbound_spi]
        assert not self.a.plane.standby and not self.b.plane.standby
        self.check_traffic()
        return a_child, b_child
