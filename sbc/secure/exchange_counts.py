"""IKE exchanges completed and negotiations failed, counted from the
daemon's events for the node's metrics.

The daemon reports outcomes, not messages, so what is counted is what the
events show: an IKE_SA set up (its IKE_SA_INIT and IKE_AUTH), a CREATE_CHILD_SA
that rekeyed a CHILD_SA or the IKE_SA, a reauthentication; liveness checks
and Deletes are not counted as exchanges. A failure is an IKE_SA that went
for any reason but an orderly end, a refused CHILD_SA, a refused rekey or a
failed reauthentication, keyed by the Notify type when there was one.
"""

from __future__ import annotations

from collections import Counter

from ipsec.ike.constants import NotifyType
from ipsec.ike.daemon import (
    ChildSaInstalled,
    ChildSaRefused,
    DaemonEvent,
    IkeSaDown,
    IkeSaReauthenticated,
    IkeSaReauthFailed,
    IkeSaRekeyed,
    IkeSaRekeyRefused,
    IkeSaUp,
)

ORDERLY_ENDS = frozenset(
    {
        "deleted locally",
        "deleted by the peer",
        "rekeyed",
        "redundant after a rekey collision",
        "reauthenticated",
        "terminated locally",
        "daemon closed",
        "replaced after INITIAL_CONTACT",
    }
)
"""IkeSaDown reasons that are no failure."""


class ExchangeCounts:
    """``exchanges`` and ``failures`` of the metrics' ``ike`` section."""

    def __init__(self) -> None:
        self.exchanges: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()

    def on_daemon_event(self, event: DaemonEvent) -> None:
        if isinstance(event, IkeSaUp):
            self.exchanges.update(("IKE_SA_INIT", "IKE_AUTH"))
        elif isinstance(event, IkeSaRekeyed):
            self.exchanges["CREATE_CHILD_SA"] += 1
        elif isinstance(event, ChildSaInstalled) and event.rekeyed_spi is not None:
            self.exchanges["CREATE_CHILD_SA"] += 1
        elif isinstance(event, IkeSaReauthenticated):
            self.exchanges["reauthentication"] += 1
        elif isinstance(event, IkeSaDown) and event.reason not in ORDERLY_ENDS:
            self.failures[_failure(event.notify_type, event.reason)] += 1
        elif isinstance(event, ChildSaRefused | IkeSaRekeyRefused | IkeSaReauthFailed):
            self.failures[_failure(event.notify_type, event.reason)] += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        return {"exchanges": dict(self.exchanges), "failures": dict(self.failures)}


def _failure(notify_type: NotifyType | int | None, reason: str) -> str:
    # A Notify names the failure in a bounded set; a reason text is the
    # daemon's own, also from a fixed set of messages.
    if isinstance(notify_type, NotifyType):
        return notify_type.name
    if notify_type is not None:
        return f"notify {notify_type}"
    return reason
