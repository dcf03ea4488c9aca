"""HTTP digest authentication for SIP (RFC 2617, RFC 7616, RFC 8760), sans-IO.

Both roles are here:

- server: `NonceIssuer` makes challenges and `DigestVerifier` checks the
  credentials of a retried request. A nonce is self-validating (a time
  stamp, a random salt and an HMAC under a secret that rotates), so no
  state is kept per challenge; only the last nonce count seen per nonce
  is remembered, in a bounded table, to refuse replays (RFC 7616 §3.4.5).
- client: `answer_challenge` computes the Authorization value for a
  challenge, from credentials and a client nonce the caller draws.

No clock is read and nothing random is drawn here: `now` and random bytes
come from the caller. Passwords and response digests are never logged.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sbc.sip.errors import SipError
from sbc.sip.headers import Challenge, Credentials, quote_string

# RFC 8760 §2.4 names; the -sess variants hash the nonces into A1 (§3.4.2).
_HASHES: dict[str, Callable[[bytes], str]] = {
    "MD5": lambda data: hashlib.md5(data).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
}
ALGORITHMS = ("SHA-256", "SHA-256-sess", "MD5", "MD5-sess")
DEFAULT_NONCE_LIFETIME = 300.0
NONCE_COUNT_TABLE_SIZE = 4096
_SALT_SIZE = 8
_SECRET_SIZE = 32
_MAC_SIZE = 16


class Unauthorized(SipError):
    """401 with WWW-Authenticate: the request must carry credentials
    (RFC 3261 §22.2). ``challenges`` are the header values, best first."""

    status_code = 401

    def __init__(self, reason: str, *, challenges: Sequence[str]) -> None:
        super().__init__(reason)
        self.challenges = tuple(challenges)


class CredentialsRejected(SipError):
    """403: the credentials do not verify; no new challenge is offered
    (policy: a wrong password is refused, not challenged again)."""

    status_code = 403


class Verdict(enum.Enum):
    """What a verifier concludes about one set of credentials."""

    ACCEPTED = "accepted"
    STALE = "stale"
    """The digest is right but the nonce expired, or its count was reused:
    challenge again with stale=true (RFC 7616 §3.3)."""
    REJECTED = "rejected"
    """Wrong password, wrong user, or credentials that do not fit the
    request (unknown algorithm, Request-URI mismatch, no qop)."""


def _hash_of(algorithm: str) -> Callable[[bytes], str] | None:
    base = algorithm[:-5] if algorithm.upper().endswith("-SESS") else algorithm
    return _HASHES.get(base.upper())


def supports(algorithm: str) -> bool:
    """Whether ``algorithm`` (case-insensitive) can be computed here."""
    return _hash_of(algorithm) is not None


@dataclass(frozen=True, slots=True)
class DigestInput:
    """Everything a response digest is computed from (RFC 7616 §3.4.1)."""

    algorithm: str
    username: str
    realm: str
    password: str
    method: str
    uri: str
    nonce: str
    qop: str | None = None
    nc: str = ""
    cnonce: str = ""

    def __repr__(self) -> str:
        # The password must never reach a log line through this object.
        return f"DigestInput(algorithm={self.algorithm!r}, user={self.username!r})"


def compute_response(values: DigestInput) -> str:
    """The ``response`` parameter for ``values``, as lower-case hex.

    With ``qop`` None this is the RFC 2069 form kept by RFC 2617 §3.2.2.1.
    Raises ValueError for an algorithm not supported here.
    """
    digest = _hash_of(values.algorithm)
    if digest is None:
        raise ValueError(f"unsupported digest algorithm {values.algorithm!r}")

    def h(text: str) -> str:
        return digest(text.encode())

    # A1 (RFC 7616 §3.4.2): the -sess form binds both nonces into it.
    ha1 = h(f"{values.username}:{values.realm}:{values.password}")
    if values.algorithm.upper().endswith("-SESS"):
        ha1 = h(f"{ha1}:{values.nonce}:{values.cnonce}")
    # A2 (§3.4.3) for qop=auth: the body is not covered.
    ha2 = h(f"{values.method}:{values.uri}")
    if values.qop is None:
        return h(f"{ha1}:{values.nonce}:{ha2}")
    return h(f"{ha1}:{values.nonce}:{values.nc}:{values.cnonce}:{values.qop}:{ha2}")


# -- Server side ---------------------------------------------------------------


class NonceIssuer:
    """Self-validating nonces under a secret that rotates.

    A nonce is hex of ``time stamp (8) | salt (8) | HMAC-SHA-256 (16)``.
    The secret is replaced every ``lifetime`` seconds and the previous one
    kept, so every nonce younger than ``lifetime`` still verifies.
    """

    __slots__ = ("_lifetime", "_previous", "_random", "_rotated_at", "_secret")

    def __init__(
        self,
        random_bytes: Callable[[int], bytes],
        *,
        lifetime: float = DEFAULT_NONCE_LIFETIME,
    ) -> None:
        self._random = random_bytes
        self._lifetime = lifetime
        # The first secret is drawn at first use, when `now` is known.
        self._secret = b""
        self._previous: bytes | None = None
        self._rotated_at = -float("inf")

    def issue(self, realm: str, now: float) -> str:
        self._rotate(now)
        stamp = int(now * 1000).to_bytes(8, "big")
        body = stamp + self._random(_SALT_SIZE)
        return (body + self._mac(self._secret, body, realm)).hex()

    def check(self, nonce: str, realm: str, now: float) -> bool | None:
        """True for a fresh nonce of ours, False for one of ours that
        expired, None for a nonce we never issued (or under a lost secret)."""
        self._rotate(now)
        try:
            raw = bytes.fromhex(nonce)
        except ValueError:
            return None
        if len(raw) != 8 + _SALT_SIZE + _MAC_SIZE:
            return None
        body, mac = raw[: 8 + _SALT_SIZE], raw[8 + _SALT_SIZE :]
        if not self._known_mac(body, mac, realm):
            return None
        issued = int.from_bytes(body[:8], "big") / 1000
        return 0 <= now - issued <= self._lifetime

    def _known_mac(self, body: bytes, mac: bytes, realm: str) -> bool:
        for secret in (self._secret, self._previous):
            if secret and hmac.compare_digest(mac, self._mac(secret, body, realm)):
                return True
        return False

    def _rotate(self, now: float) -> None:
        if now - self._rotated_at >= self._lifetime:
            # Two rotations at once lose both secrets: every old nonce is
            # then unknown, which only costs a fresh challenge.
            skipped = now - self._rotated_at >= 2 * self._lifetime
            self._previous = None if skipped else self._secret
            self._secret = self._random(_SECRET_SIZE)
            self._rotated_at = now

    @staticmethod
    def _mac(secret: bytes, body: bytes, realm: str) -> bytes:
        return hmac.new(secret, body + realm.encode(), "sha256").digest()[:_MAC_SIZE]


class DigestVerifier:
    """Challenges requests and verifies their retries, for any number of
    accounts (the caller looks the password up by username and realm)."""

    __slots__ = ("_algorithms", "_counts", "_nonces", "_table_size")

    def __init__(
        self,
        nonces: NonceIssuer,
        *,
        algorithms: Sequence[str] = ("SHA-256", "MD5"),
        table_size: int = NONCE_COUNT_TABLE_SIZE,
    ) -> None:
        self._nonces = nonces
        self._algorithms = tuple(algorithms)
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._table_size = table_size

    def challenge(self, realm: str, now: float, *, stale: bool = False) -> Unauthorized:
        """A 401 offering every algorithm, best first (RFC 8760 §2.4)."""
        nonce = self._nonces.issue(realm, now)
        tail = ", stale=true" if stale else ""
        values = [
            f"Digest realm={quote_string(realm)}, nonce={quote_string(nonce)}, "
            f'algorithm={algorithm}, qop="auth"{tail}'
            for algorithm in self._algorithms
        ]
        return Unauthorized("Unauthorized", challenges=values)

    def verify(
        self,
        credentials: Credentials,
        *,
        method: str,
        request_uri: str,
        realm: str,
        password: str,
        now: float,
    ) -> Verdict:
        """Check ``credentials`` sent with a request against ``password``."""
        values = self._input(credentials, method, request_uri, realm, password)
        if values is None:
            return Verdict.REJECTED
        expected = compute_response(values)
        given = credentials.get("response") or ""
        if not hmac.compare_digest(expected.encode(), given.lower().encode()):
            return Verdict.REJECTED

        # The digest is right: is the nonce ours, fresh, and its count new?
        fresh = self._nonces.check(values.nonce, realm, now)
        if not fresh:
            return Verdict.STALE
        if not self._count_is_new(values.nonce, values.nc):
            return Verdict.STALE
        return Verdict.ACCEPTED

    def _input(
        self,
        credentials: Credentials,
        method: str,
        request_uri: str,
        realm: str,
        password: str,
    ) -> DigestInput | None:
        params = credentials.params
        algorithm = params.get("algorithm", "MD5")
        if credentials.scheme.lower() != "digest":
            return None
        if algorithm.upper() not in {name.upper() for name in self._algorithms}:
            return None
        # RFC 7616 §3.4.6: the credentials must be for this very request.
        if params.get("realm") != realm or params.get("uri") != request_uri:
            return None
        # We only ever offer qop=auth, so an answer without it is not ours.
        if params.get("qop", "").lower() != "auth":
            return None
        required = ("username", "nonce", "nc", "cnonce", "response")
        if any(not params.get(name) for name in required):
            return None
        return DigestInput(
            algorithm,
            params["username"],
            realm,
            password,
            method,
            request_uri,
            params["nonce"],
            "auth",
            params["nc"],
            params["cnonce"],
        )

    def _count_is_new(self, nonce: str, nc: str) -> bool:
        try:
            count = int(nc, 16)
        except ValueError:
            return False
        last = self._counts.get(nonce, 0)
        if count <= last:
            return False
        self._counts[nonce] = count
        self._counts.move_to_end(nonce)
        # Bounded: an evicted nonce only loses its replay memory early,
        # and it expires within the nonce lifetime anyway.
        while len(self._counts) > self._table_size:
            self._counts.popitem(last=False)
        return True


# -- Client side ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientCredentials:
    """What the SBC answers a trunk's challenge with."""

    username: str
    password: str
    realm: str | None = None
    """Only challenges of this realm are answered; None answers any."""
    algorithms: tuple[str, ...] = ("SHA-256", "MD5")
    """Accepted algorithms, by preference (RFC 8760 §2.4)."""

    def __repr__(self) -> str:
        return f"ClientCredentials(username={self.username!r}, realm={self.realm!r})"


def choose_challenge(
    challenges: Sequence[Challenge], credentials: ClientCredentials
) -> Challenge | None:
    """The challenge to answer: the first of our preferred algorithms
    that one of ``challenges`` offers, in a realm we may answer."""
    usable = [
        challenge
        for challenge in challenges
        if challenge.scheme.lower() == "digest"
        and challenge.get("nonce")
        and challenge.get("realm") is not None
        and (credentials.realm is None or challenge.get("realm") == credentials.realm)
        and (not challenge.qop_options or "auth" in challenge.qop_options)
    ]
    for algorithm in credentials.algorithms:
        for challenge in usable:
            offered = challenge.get("algorithm") or "MD5"
            if offered.upper() in (algorithm.upper(), f"{algorithm.upper()}-SESS"):
                return challenge
    return None


def answer_challenge(
    challenge: Challenge,
    credentials: ClientCredentials,
    *,
    method: str,
    uri: str,
    cnonce: str,
    nc: int = 1,
) -> str:
    """The Authorization (or Proxy-Authorization) value for ``challenge``.

    ``cnonce`` is drawn by the caller (hex of a few random bytes).
    """
    algorithm = challenge.get("algorithm") or "MD5"
    qop = "auth" if "auth" in challenge.qop_options else None
    realm = challenge.get("realm") or ""
    nonce = challenge.get("nonce") or ""
    count = f"{nc:08x}"
    response = compute_response(
        DigestInput(
            algorithm,
            credentials.username,
            realm,
            credentials.password,
            method,
            uri,
            nonce,
            qop,
            count if qop else "",
            cnonce if qop else "",
        )
    )
    parts = [
        f"Digest username={quote_string(credentials.username)}",
        f"realm={quote_string(realm)}",
        f"nonce={quote_string(nonce)}",
        f"uri={quote_string(uri)}",
        f'response="{response}"',
        f"algorithm={algorithm}",
    ]
    if qop is not None:
        parts += [f"qop={qop}", f"nc={count}", f"cnonce={quote_string(cnonce)}"]
    opaque = challenge.get("opaque")
    if opaque is not None:
        parts.append(f"opaque={quote_string(opaque)}")
    return ", ".join(parts)


def digest_username(credentials: Sequence[Credentials]) -> str | None:
    """The username of the first Digest credentials, if any."""
    for item in credentials:
        if item.scheme.lower() == "digest":
            return item.get("username")
    return None


__all__ = [
    "ALGORITHMS",
    "ClientCredentials",
    "CredentialsRejected",
    "DigestInput",
    "DigestVerifier",
    "NonceIssuer",
    "Unauthorized",
    "Verdict",
    "answer_challenge",
    "choose_challenge",
    "compute_response",
    "digest_username",
    "supports",
]
