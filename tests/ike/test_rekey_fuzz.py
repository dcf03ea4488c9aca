"""Random operations from both peers over a lossy, reordering wire.

Any mix of CHILD_SA creation, rekey and delete and IKE_SA rekey, started by
either peer at any moment, must never raise inside the engines, and once the
wire heals both peers must agree: one IKE_SA each, with the same SPIs, and
the same CHILD_SA pairs (none if the users deleted them all), every one of
which carries traffic.
"""

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ipsec.ike.ike_sa import IkeSaState

from .rekey_harness import Pair

STEPS = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "deliver",
                "deliver",
                "deliver",
                "late",
                "drop",
                "timer",
                "rekey-child",
                "create-child",
                "delete-child",
                "rekey-ike",
            ]
        ),
        st.sampled_from("ab"),
        st.integers(min_value=0, max_value=3),
    ),
    max_size=40,
)


def operate(pair, side, kind, pick):
    """Start an operation as a user or timer would; refusals are fine."""
    engine = side.sa
    if engine.state is not IkeSaState.ESTABLISHED:
        return
    installed = [c for c in engine.child_sas if c.state.name == "INSTALLED"]
    # A Delete can overtake the response that creates the CHILD_SA at the
    # peer (a documented limitation), so the user deletes only pairs both
    # ends have, and in use, while another one stays.
    peer_has = {c.outbound_spi for c in pair.other(side).sa.child_sas}
    known = [c for c in installed if c.inbound_spi in peer_has and c.outbound_active]
    try:
        if kind == "rekey-child" and installed:
            engine.rekey_child_sa(
                installed[pick % len(installed)].inbound_spi, pair.now
            )
        elif kind == "delete-child" and len(known) > 1:
            engine.delete_child_sa(known[pick % len(known)].inbound_spi, pair.now)
        elif kind == "create-child" and len(engine.child_sas) < 3:
            engine.create_child_sa(pair.now)
        elif kind == "rekey-ike":
            engine.rekey_ike_sa(pair.now)
    except RuntimeError:
        return  # e.g. CHILD_SA work while the IKE_SA is being rekeyed
    pair.collect()


def heal(pair):
    for _ in range(80):
        pair.settle()
        timers = pair.a.timers() + pair.b.timers()
        busy = [
            e
            for s in (pair.a, pair.b)
            for e in s.engines
            if e.state is IkeSaState.ESTABLISHED
            and (e._outstanding or e._children.pending)
        ]
        live = [
            e
            for s in (pair.a, pair.b)
            for e in s.engines
            if e.state is IkeSaState.ESTABLISHED
        ]
        if not busy and len(live) == 2:
            return
        pair.advance(min(timers))
    raise AssertionError("the peers never settled")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS)
def test_random_operations_and_faults_converge_to_agreeing_peers(steps):
    changes = {"dpd_delay": 120.0}
    pair = Pair(changes, changes)
    drops = timers = 0

    for kind, who, pick in steps:
        side = pair.a if who == "a" else pair.b
        queue = pair.wire[side.name]
        if kind in ("deliver", "late", "drop"):
            if not queue:
                continue
            if kind == "drop" and drops < 3:
                drops += 1
                pair.drop(side)
                continue
            if kind == "late":
                queue.rotate(-1)
            pair.deliver(side, check_traffic=False)
        elif kind == "timer":
            timers += 1
            found = pair.a.timers() + pair.b.timers()
            if found and timers <= 3:
                pair.advance(min(found))
        else:
            operate(pair, side, kind, pick)
    heal(pair)

    for side in (pair.a, pair.b):
        assert [e for e in side.engines if e.state is IkeSaState.ESTABLISHED] == [
            side.sa
        ]
    assert (pair.a.sa.spi_i, pair.a.sa.spi_r) == (pair.b.sa.spi_i, pair.b.sa.spi_r)
    a_pairs = {(c.inbound_spi, c.outbound_spi) for c in pair.a.sa.child_sas}
    b_pairs = {(c.outbound_spi, c.inbound_spi) for c in pair.b.sa.child_sas}
    assert a_pairs == b_pairs  # empty if the users deleted every pair
    assert set(pair.a.plane.inbound) == {spi for spi, _ in a_pairs}
    assert all(c.state.name == "INSTALLED" for c in pair.a.sa.child_sas)
    assert all(c.state.name == "INSTALLED" for c in pair.b.sa.child_sas)
    if a_pairs:
        pair.check_traffic()
