"""The REGISTER client against a scripted registrar on the in-memory lab."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from b2bua_harness import CALLEE, SBC, Lab, lab_config

from sbc.b2bua import B2buaSettings
from sbc.b2bua.registration import (
    Registered,
    RegistrationClient,
    RegistrationFailed,
    RegistrationState,
    Unregistered,
    registration_clients,
)
from sbc.sip.headers import parse_challenge

REALM = "registrar.example"
PASSWORD = "reg-pw"
AUTH = {"username": "sbc-line", "password": PASSWORD}


def _digest(method, uri, params, password=PASSWORD):
    """RFC 7616 §3.4.1 with SHA-256 and qop=auth, written independently."""

    def h(text):
        return hashlib.sha256(text.encode()).hexdigest()

    ha1 = h(f"{params['username']}:{params['realm']}:{password}")
    ha2 = h(f"{method}:{uri}")
    return h(f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:auth:{ha2}")


class Registrar:
    """A registrar at CALLEE that challenges and then grants ``granted`` s."""

    def __init__(self, lab, *, granted=None, challenge=True, status=200, extra=()):
        self.lab = lab
        self.granted = granted
        self.challenge = challenge
        self.status = status
        self.extra = extra
        self.seen = []
        self.nonce = 0
        lab.callee.on_request = self.on_request

    def on_request(self, event):
        request = event.request
        self.seen.append((self.lab.now, request))
        credentials = request.authorization
        if self.challenge and not credentials:
            self.nonce += 1
            value = f'Digest realm="{REALM}", nonce="n{self.nonce}", algorithm=SHA-256, qop="auth"'
            self.lab.callee.respond(event, 401, extra=(("WWW-Authenticate", value),))
            return
        if credentials:
            params = credentials[0].params
            good = params["response"] == _digest("REGISTER", params["uri"], params)
            if not good:
                self.lab.callee.respond(event, 403)
                return
        expires = int(request.headers.get("Expires"))
        granted = expires if self.granted is None else min(self.granted, expires)
        contact = request.headers.get("Contact")
        extra = self.extra
        if self.status == 200 and expires:
            extra = ((("Contact", f"{contact};expires={granted}")), *extra)
        self.lab.callee.respond(event, self.status, extra=extra)

    @property
    def times(self):
        return [at for at, _ in self.seen]

    @property
    def gaps(self):
        return [b - a for a, b in itertools.pairwise(self.times)]


def _client(lab_overrides=None, **registration):
    settings = {"aor": "sip:+15550199@registrar.example", **registration}
    pbx = {"registration": settings, "outbound_auth": AUTH, **(lab_overrides or {})}
    config = lab_config({"pbx": pbx})
    lab = Lab(config=config)
    [trunk] = [t for t in config.trunks if t.name == "pbx"]
    endpoint = B2buaSettings.from_config(config).endpoints[0]
    client = RegistrationClient(lab.sbc.layer, trunk, endpoint, lab.rng)
    lab.engine.attach(client)
    return lab, client


def _events(client):
    events = []
    while (event := client.next_event()) is not None:
        events.append(event)
    return events


def test_registration_challenge_then_registered():
    lab, client = _client(expires=600)
    registrar = Registrar(lab)

    client.start(lab.now)
    lab.run()

    first, second = (request for _, request in registrar.seen)
    assert first.method == second.method == "REGISTER"
    assert first.call_id == second.call_id and first.from_tag == second.from_tag
    assert second.cseq.number == first.cseq.number + 1
    assert second.top_via.branch != first.top_via.branch
    assert first.uri == "sip:192.0.2.20:5060"
    assert str(second.to.uri) == "sip:+15550199@registrar.example"
    assert second.headers.get("Contact") == "<sip:+15550199@192.0.2.1:5060>"
    assert second.headers.get("Expires") == "600"
    [credentials] = second.authorization
    assert credentials.get("username") == "sbc-line"
    assert client.state is RegistrationState.REGISTERED
    assert _events(client) == [Registered("pbx", lab.now + 600)]


def test_registration_refreshed_before_granted_expiry():
    lab, client = _client(expires=3600)
    registrar = Registrar(lab, granted=120, challenge=False)
    client.start(lab.now)
    lab.run()
    start = lab.now

    lab.advance(59.9)
    assert len(registrar.seen) == 1
    lab.advance(0.2)
    assert len(registrar.seen) == 2
    lab.advance(3600)

    # Granted 120 s each time: a refresh at half the binding's life.
    gaps = registrar.gaps
    assert registrar.times[0] == start and gaps and set(gaps) == {60.0}
    assert client.state is RegistrationState.REGISTERED


def test_registration_refresh_margin_on_long_binding():
    lab, client = _client(expires=3600)
    registrar = Registrar(lab, challenge=False)
    client.start(lab.now)
    lab.run()

    lab.advance(3299)
    assert len(registrar.seen) == 1
    lab.advance(2)
    assert len(registrar.seen) == 2


def test_registration_backoff_doubles_up_to_maximum():
    lab, client = _client(retry={"initial": 10, "maximum": 50, "factor": 2})
    registrar = Registrar(lab, challenge=False, status=503)
    client.start(lab.now)

    lab.advance(200)

    gaps = registrar.gaps
    assert gaps[:5] == [10.0, 20.0, 40.0, 50.0, 50.0]
    assert client.state is RegistrationState.RETRY_WAIT
    failed = _events(client)[0]
    assert isinstance(failed, RegistrationFailed) and failed.status == 503


def test_registration_retry_after_longer_than_backoff_is_honoured():
    lab, client = _client(retry={"initial": 10, "maximum": 50, "factor": 2})
    registrar = Registrar(
        lab, challenge=False, status=503, extra=(("Retry-After", "90"),)
    )
    client.start(lab.now)

    lab.advance(100)

    assert registrar.gaps == [90.0]


def test_registration_no_answer_then_retry_and_recover():
    lab, client = _client(retry={"initial": 30, "maximum": 600, "factor": 2})
    registrar = Registrar(lab, challenge=False)
    start = lab.now
    lab.drop = lambda wire: wire.destination == CALLEE and lab.now < start + 40
    client.start(lab.now)

    lab.advance(120)

    # Timer F (64*T1 = 32 s) ends the first attempt; the retry 30 s later works.
    assert registrar.times == [start + 32 + 30]
    assert client.state is RegistrationState.REGISTERED
    kinds = [type(event) for event in _events(client)]
    assert kinds == [RegistrationFailed, Registered]


def test_registration_wrong_password_fails_after_one_answer():
    lab, client = _client()
    lab.callee.on_request = lambda event: lab.callee.respond(
        event,
        401,
        extra=(("WWW-Authenticate", f'Digest realm="{REALM}", nonce="x", qop="auth"'),),
    )
    client.start(lab.now)
    lab.run()

    registers = lab.requests_between(SBC, CALLEE, "REGISTER")
    assert len(registers) == 2
    assert client.state is RegistrationState.RETRY_WAIT
    [failed] = _events(client)
    assert failed.status == 401


def test_registration_interval_too_brief_uses_min_expires():
    lab, client = _client(expires=60)
    registrar = Registrar(lab, challenge=False)

    def answer(event):
        if event.request.headers.get("Expires") == "60":
            lab.callee.respond(event, 423, extra=(("Min-Expires", "300"),))
        else:
            registrar.on_request(event)

    lab.callee.on_request = answer
    client.start(lab.now)
    lab.run()

    assert client.state is RegistrationState.REGISTERED
    assert registrar.seen[-1][1].headers.get("Expires") == "300"


def test_unregister_on_stop():
    lab, client = _client()
    registrar = Registrar(lab)
    client.start(lab.now)
    lab.run()
    _events(client)

    client.stop(lab.now)
    lab.run()

    last = registrar.seen[-1][1]
    assert last.headers.get("Expires") == "0"
    assert last.authorization, "the removal is challenged and answered too"
    assert client.state is RegistrationState.STOPPED
    assert _events(client) == [Unregistered("pbx")]
    lab.advance(7200)
    assert registrar.seen[-1][1] is last  # no refresh after stop


@pytest.mark.parametrize("state", ["idle", "retry"])
def test_stop_without_binding_sends_nothing(state):
    lab, client = _client()
    Registrar(lab, challenge=False, status=500)
    if state == "retry":
        client.start(lab.now)
        lab.run()
    sent = len(lab.requests_between(SBC, CALLEE, "REGISTER"))

    client.stop(lab.now)
    lab.advance(3600)

    assert len(lab.requests_between(SBC, CALLEE, "REGISTER")) == sent
    assert client.state is RegistrationState.STOPPED
    assert client.next_timer() is None


def test_challenge_parameters_reach_the_answer():
    lab, client = _client()
    registrar = Registrar(lab)
    client.start(lab.now)
    lab.run()
    challenge = parse_challenge(
        f'Digest realm="{REALM}", nonce="n1", algorithm=SHA-256, qop="auth"'
    )
    [credentials] = registrar.seen[1][1].authorization
    assert credentials.get("nonce") == challenge.get("nonce")
    assert credentials.get("realm") == REALM and credentials.get("qop") == "auth"


def test_registration_clients_one_per_trunk_with_registration():
    registration = {"aor": "sip:+15550199@registrar.example"}
    config = lab_config({"pbx": {"registration": registration}})
    endpoints = {e.transport: e for e in B2buaSettings.from_config(config).endpoints}

    lab = Lab(config=config)
    clients = registration_clients(lab.sbc.layer, config, endpoints, lab.rng)
    missing = registration_clients(lab.sbc.layer, config, {}, lab.rng)

    assert [client.state for client in clients] == [RegistrationState.IDLE]
    assert missing == []
