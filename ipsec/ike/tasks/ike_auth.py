"""IKE_AUTH authentication with a pre-shared key (RFC 7296 §1.2, §2.15)."""

from __future__ import annotations

from ..constants import AuthMethod
from ..errors import AuthenticationFailed, InvalidSyntax
from ..events import IkeSaEstablished
from ..keymat import psk_auth_data, signed_octets, verify_psk_auth
from ..message import IkeMessage
from ..payloads import AuthPayload, IdiPayload, IdPayload, IdrPayload, Payload
from .base import Task


class IkeAuth(Task):
    # Initiator

    def build_i(self) -> list[Payload]:
        config = self.context.config
        identity = config.local_id.as_idi()
        return [identity, config.remote_id.as_idr(), self._auth(identity)]

    def process_i(self, response: IkeMessage) -> None:
        identity = response.first(IdrPayload)
        self._authenticate(identity, response.first(AuthPayload))

    # Responder

    def process_r(self, request: IkeMessage) -> None:
        # RFC 7296 §3.5: an IDr in the request names the identity wanted of us.
        wanted = request.first(IdrPayload)
        if wanted is not None and not self.context.config.local_id.matches(wanted):
            raise AuthenticationFailed("initiator asked for another identity of ours")
        identity = request.first(IdiPayload)
        self._authenticate(identity, request.first(AuthPayload))

    def build_r(self) -> list[Payload]:
        identity = self.context.config.local_id.as_idr()
        return [identity, self._auth(identity)]

    # Both

    def _signed_octets(self, identity: IdPayload, by_initiator: bool) -> bytes:
        """InitiatorSignedOctets or ResponderSignedOctets (RFC 7296 §2.15)."""
        context = self.context
        suite, keys = context.require_keys()
        prf = suite.transforms.prf
        if by_initiator:
            return signed_octets(
                prf, context.init_request, context.nonce_r, keys.sk_pi, identity
            )
        return signed_octets(
            prf, context.init_response, context.nonce_i, keys.sk_pr, identity
        )

    def _auth(self, identity: IdPayload) -> AuthPayload:
        context = self.context
        octets = self._signed_octets(identity, context.is_original_initiator)
        prf = context.require_keys()[0].transforms.prf
        data = psk_auth_data(prf, context.config.psk, octets)
        return AuthPayload(AuthMethod.SHARED_KEY_MIC, data)

    def _authenticate(
        self, identity: IdPayload | None, auth: AuthPayload | None
    ) -> None:
        context = self.context
        if identity is None or auth is None:
            raise InvalidSyntax("IKE_AUTH without ID and AUTH payloads")
        if not context.config.remote_id.matches(identity):
            raise AuthenticationFailed("peer identity is not the configured one")
        if auth.auth_method != AuthMethod.SHARED_KEY_MIC:
            raise AuthenticationFailed(f"auth method {auth.auth_method} not accepted")

        # The peer signed its own octets: the initiator's if we respond.
        octets = self._signed_octets(identity, not context.is_original_initiator)
        suite, _ = context.require_keys()
        verify_psk_auth(
            suite.transforms.prf, context.config.psk, octets, auth.authentication_data
        )
        context.remote_id = identity
        transforms = suite.transforms
        self.outcome.append(
            IkeSaEstablished(
                context.spi_i,
                context.spi_r,
                transforms.encr,
                transforms.prf,
                transforms.integ,
                suite.dh_group,
                identity,
                context.local_behind_nat,
                context.remote_behind_nat,
            )
        )
