"""IKE_AUTH authentication with a pre-shared key or certificates (RFC 7296
§1.2, §2.15; RFC 7427)."""

from __future__ import annotations

from ..certificates import (
    authenticate_peer,
    certificate_payloads,
    certificate_request,
    sign_auth,
)
from ..constants import AuthMethod
from ..errors import AuthenticationFailed, InvalidSyntax
from ..events import IkeSaEstablished
from ..keymat import psk_auth_data, signed_octets, verify_psk_auth
from ..message import IkeMessage
from ..payloads import (
    AuthPayload,
    CertPayload,
    IdiPayload,
    IdPayload,
    IdrPayload,
    Payload,
)
from .base import Task


class IkeAuth(Task):
    # Initiator

    def build_i(self) -> list[Payload]:
        config = self.context.config
        identity = config.local_id.as_idi()
        return [
            identity,
            *self._certificates(),
            *self._certificate_request(),
            config.remote_id.as_idr(),
            self._auth(identity),
        ]

    def process_i(self, response: IkeMessage) -> None:
        self._authenticate(response.first(IdrPayload), response)

    # Responder

    def process_r(self, request: IkeMessage) -> None:
        # RFC 7296 §3.5: an IDr in the request names the identity wanted of us.
        wanted = request.first(IdrPayload)
        if wanted is not None and not self.context.config.local_id.matches(wanted):
            raise AuthenticationFailed("initiator asked for another identity of ours")
        self._authenticate(request.first(IdiPayload), request)

    def build_r(self) -> list[Payload]:
        identity = self.context.config.local_id.as_idr()
        return [identity, *self._certificates(), self._auth(identity)]

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

    def _certificates(self) -> list[Payload]:
        certificates = self.context.config.certificates
        if certificates is None or certificates.local is None:
            return []
        return list(certificate_payloads(certificates.local))

    def _certificate_request(self) -> list[Payload]:
        # The initiator asks in IKE_AUTH; the responder did in IKE_SA_INIT.
        certificates = self.context.config.certificates
        if certificates is None or not certificates.trust_anchors:
            return []
        return [certificate_request(certificates.trust_anchors)]

    def _auth(self, identity: IdPayload) -> AuthPayload:
        context = self.context
        octets = self._signed_octets(identity, context.is_original_initiator)
        certificates = context.config.certificates
        if certificates is not None and certificates.local is not None:
            key = certificates.local.private_key
            return sign_auth(key, octets, context.peer_signature_hashes)
        psk = context.config.psk
        if psk is None:
            raise AuthenticationFailed("neither a certificate nor a PSK to sign with")
        prf = context.require_keys()[0].transforms.prf
        return AuthPayload(AuthMethod.SHARED_KEY_MIC, psk_auth_data(prf, psk, octets))

    def _authenticate(self, identity: IdPayload | None, message: IkeMessage) -> None:
        context = self.context
        auth = message.first(AuthPayload)
        if identity is None or auth is None:
            raise InvalidSyntax("IKE_AUTH without ID and AUTH payloads")
        if not context.config.remote_id.matches(identity):
            raise AuthenticationFailed("peer identity is not the configured one")

        # The peer signed its own octets: the initiator's if we respond.
        octets = self._signed_octets(identity, not context.is_original_initiator)
        certificates = context.config.certificates
        if certificates is not None and certificates.requires_peer_certificate:
            cert_payloads = message.all(CertPayload)
            authenticate_peer(cert_payloads, identity, auth, octets, certificates)
        else:
            self._verify_psk(auth, octets)
        suite, _ = context.require_keys()
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

    def _verify_psk(self, auth: AuthPayload, octets: bytes) -> None:
        psk = self.context.config.psk
        if auth.auth_method != AuthMethod.SHARED_KEY_MIC or psk is None:
            raise AuthenticationFailed(f"auth method {auth.auth_method} not accepted")
        prf = self.context.require_keys()[0].transforms.prf
        verify_psk_auth(prf, psk, octets, auth.authentication_data)
