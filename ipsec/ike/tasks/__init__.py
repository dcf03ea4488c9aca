"""Exchange tasks: one class per concern, each with initiator and responder steps.

The IKE_SA engine composes them per exchange (IKE_SA_INIT: ``IkeInit`` and ``IkeNatd``;
IKE_AUTH: ``IkeAuth`` then ``ChildCreate``), as strongSwan's
``sa/ikev2/tasks/`` does.
"""

from .base import IkeSaContext, Task
from .child_create import ChildCreate, RefuseCreateChildSa
from .ike_auth import IkeAuth
from .ike_init import IkeInit
from .ike_natd import IkeNatd

__all__ = [
    "ChildCreate",
    "IkeAuth",
    "IkeInit",
    "IkeNatd",
    "IkeSaContext",
    "RefuseCreateChildSa",
    "Task",
]
