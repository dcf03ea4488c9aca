"""Real peers for digest: SIPp as a registrar that challenges (and checks
the answer with its own digest code), SIPp as a callee that answers the
first INVITE of each call with 407, and SIPp as a caller that answers the
SBC's own 401 with its digest code.

The glue is the test-only one of test_engine_with_sipp.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import subprocess

import pytest
from peer_tools import require_tool
from test_engine_with_sipp import (
    HOST,
    SCENARIOS,
    Records,
    UdpGlue,
    free_udp_port,
    sipp_argv,
)

from sbc.b2bua import B2bua, B2buaSettings
from sbc.b2bua.registration import RegistrationClient, RegistrationState
from sbc.cdr import Disposition
from sbc.config.model import Config
from sbc.sip.digest import DigestVerifier, NonceIssuer
from sbc.sip.parser import parse_message

CALLS = 3
AUTH = {"username": "sbc-line", "password": "reg-pw"}


def auth_config(sbc_port: int, peer_port: int) -> Config:
    return Config.model_validate(
        {
            "listeners": [
                {"name": "lo", "transport": "udp", "address": HOST, "port": sbc_port}
            ],
            "trunks": [
                {
                    "name": "sipp-uac",
                    "kind": "carrier",
                    "listeners": ["lo"],
                    "targets": [{"host": HOST, "port": 5999}],
                    "inbound": {"allow": [HOST]},
                    "dial_plan": "plan",
                },
                {
                    "name": "carrier",
                    "kind": "carrier",
                    "listeners": ["lo"],
                    "targets": [{"host": HOST, "port": peer_port}],
                    "outbound_auth": AUTH,
                    "registration": {"aor": "sip:sbc-line@sipp.example"},
                },
            ],
            "dial_plans": [
                {
                    "name": "plan",
                    "routes": [
                        {"prefix": "1555", "candidates": [{"trunk": "carrier"}]}
                    ],
                }
            ],
        }
    )


async def wait_for(condition, seconds: float) -> bool:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return True
        await asyncio.sleep(0.05)
    return condition()


async def register_and_unregister(sipp: str, workdir):
    sbc_port, registrar_port = free_udp_port(), free_udp_port()
    config = auth_config(sbc_port, registrar_port)
    loop = asyncio.get_running_loop()
    registrar = subprocess.Popen(
        sipp_argv(
            sipp, ("-sf", str(SCENARIOS / "registrar_401.xml")), registrar_port,
            "-m", "1",
        ),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _, glue = await loop.create_datagram_endpoint(
        lambda: UdpGlue(config, Records()), local_addr=(HOST, sbc_port)
    )
    try:
        await asyncio.sleep(0.3)  # SIPp binds its port
        trunk = next(t for t in config.trunks if t.name == "carrier")
        endpoint = B2buaSettings.from_config(config).endpoints[0]
        client = RegistrationClient(glue.layer, trunk, endpoint, random.Random(3))
        glue.engine.attach(client)
        client.start(loop.time())
        glue.flush()
        registered = await wait_for(
            lambda: client.state is RegistrationState.REGISTERED, 10
        )
        expires_at = client.expires_at
        client.stop(loop.time())
        glue.flush()
        stopped = await wait_for(lambda: client.state is RegistrationState.STOPPED, 10)
        returncode = await loop.run_in_executor(None, registrar.wait, 20)
        return registered, stopped, expires_at, returncode, loop.time()
    finally:
        if registrar.poll() is None:
            registrar.terminate()
            registrar.wait(timeout=10)
        glue.transport.close()
        if glue.timer is not None:
            glue.timer.cancel()


@pytest.mark.timeout(120)
def test_sipp_registrar_401_then_200_and_unregister(tmp_path):
    sipp = require_tool("sipp", "sip-tester")

    registered, stopped, expires_at, returncode, now = asyncio.run(
        register_and_unregister(sipp, tmp_path)
    )

    # SIPp's verifyauth accepted both digests, or it would have sent 403
    # and failed its call (non-zero exit).
    assert registered and stopped
    assert expires_at is not None and 590 < expires_at - now <= 600
    assert returncode == 0


class RecordingGlue(UdpGlue):
    """Keeps every datagram the SBC sends to the callee."""

    callee: tuple[str, int] = ("", 0)

    def flush(self) -> None:
        pending = self.layer.datagrams_to_send()
        self.sent = getattr(self, "sent", [])
        self.sent += [data for data, dest, _ in pending if tuple(dest) == self.callee]
        for data, destination, _ in pending:
            self.sent_methods.append(data[: data.index(b" ")])
            self.transport.sendto(data, destination)
        if self.timer is not None:
            self.timer.cancel()
        deadlines = [self.layer.next_timer(), self.engine.next_timer()]
        soonest = min((t for t in deadlines if t is not None), default=None)
        self.timer = (
            None if soonest is None else self.loop.call_at(soonest, self.on_timer)
        )


async def challenged_calls(sipp: str, workdir):
    sbc_port, callee_port, caller_port = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    )
    config = auth_config(sbc_port, callee_port)
    records = Records()
    loop = asyncio.get_running_loop()
    _, glue = await loop.create_datagram_endpoint(
        lambda: RecordingGlue(config, records), local_addr=(HOST, sbc_port)
    )
    glue.callee = (HOST, callee_port)
    callee = subprocess.Popen(
        sipp_argv(sipp, ("-sf", str(SCENARIOS / "uas_407.xml")), callee_port),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        caller = await asyncio.create_subprocess_exec(
            *sipp_argv(
                sipp, ("-sn", "uac"), caller_port, "-s", "15550100", "-m", str(CALLS),
                "-r", "5", "-d", "200", f"{HOST}:{sbc_port}",
            ),
            cwd=workdir,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            output, _ = await asyncio.wait_for(caller.communicate(), 60)
        except TimeoutError:
            caller.kill()
            output, _ = await caller.communicate()
        await asyncio.sleep(0.5)
        return caller.returncode or 0, output.decode(errors="replace"), glue, records
    finally:
        callee.terminate()
        callee.wait(timeout=10)
        glue.transport.close()
        if glue.timer is not None:
            glue.timer.cancel()


def md5_digest(params, method, password):
    """RFC 2617 §3.2.2 with qop=auth, independent of sbc.sip.digest."""

    def h(text):
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = h(f"{params['username']}:{params['realm']}:{password}")
    ha2 = h(f"{method}:{params['uri']}")
    return h(f"{ha1}:{params['nonce']}:{params['nc']}:{params['cnonce']}:auth:{ha2}")


@pytest.mark.timeout(120)
def test_sipp_callee_407_answered_with_proxy_authorization(tmp_path):
    sipp = require_tool("sipp", "sip-tester")

    returncode, output, glue, records = asyncio.run(challenged_calls(sipp, tmp_path))

    assert returncode == 0, output[-2000:]
    assert len(records.records) == CALLS
    assert {r.disposition for r in records.records} == {Disposition.ANSWERED}
    invites = [
        message
        for message in map(parse_message, glue.sent)
        if getattr(message, "method", "") == "INVITE"
    ]
    answered = [m for m in invites if m.proxy_authorization]
    assert len(invites) == 2 * CALLS and len(answered) == CALLS
    for invite in answered:
        [credentials] = invite.proxy_authorization
        params = credentials.params
        assert params["uri"] == invite.uri
        assert params["response"] == md5_digest(params, "INVITE", AUTH["password"])


class ChallengingGlue(UdpGlue):
    """The engine offers MD5 only: SIPp 3.6 computes no SHA-256 digest."""

    def __init__(self, config: Config, records: Records) -> None:
        super().__init__(config, records)
        rng = random.Random(11)
        verifier = DigestVerifier(NonceIssuer(rng.randbytes), algorithms=("MD5",))
        settings = B2buaSettings.from_config(config)
        self.engine = B2bua(self.layer, config, settings, rng, records, digest=verifier)


def inbound_digest_config(sbc_port: int, callee_port: int) -> Config:
    config = auth_config(sbc_port, callee_port).model_dump(mode="json")
    caller = config["trunks"][0]
    caller["inbound"]["digest"] = {
        "username": "carrier1",
        "password": "s3cret-pw",
        "realm": "sbc.example",
    }
    for trunk in config["trunks"]:
        trunk.pop("outbound_auth", None)
        trunk.pop("registration", None)
    return Config.model_validate(config)


async def authenticated_calls(sipp: str, workdir):
    sbc_port, callee_port, caller_port = (
        free_udp_port(),
        free_udp_port(),
        free_udp_port(),
    )
    config = inbound_digest_config(sbc_port, callee_port)
    records = Records()
    loop = asyncio.get_running_loop()
    _, glue = await loop.create_datagram_endpoint(
        lambda: ChallengingGlue(config, records), local_addr=(HOST, sbc_port)
    )
    callee = subprocess.Popen(
        sipp_argv(sipp, ("-sn", "uas"), callee_port),
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        caller = await asyncio.create_subprocess_exec(
            *sipp_argv(
                sipp, ("-sf", str(SCENARIOS / "uac_401.xml")), caller_port,
                "-s", "15550100", "-m", str(CALLS), "-r", "5", f"{HOST}:{sbc_port}",
                # SIPp's digest uri defaults to remote_ip:port; RFC 7616
                # §3.4.6 wants the Request-URI, which the SBC checks.
                "-auth_uri", f"15550100@{HOST}:{sbc_port}",
            ),
            cwd=workdir,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            output, _ = await asyncio.wait_for(caller.communicate(), 60)
        except TimeoutError:
            caller.kill()
            output, _ = await caller.communicate()
        await asyncio.sleep(0.5)
        return caller.returncode or 0, output.decode(errors="replace"), glue, records
    finally:
        callee.terminate()
        callee.wait(timeout=10)
        glue.transport.close()
        if glue.timer is not None:
            glue.timer.cancel()


@pytest.mark.timeout(120)
def test_sipp_caller_answers_our_401_and_gets_through(tmp_path):
    sipp = require_tool("sipp", "sip-tester")

    returncode, output, glue, records = asyncio.run(authenticated_calls(sipp, tmp_path))

    # SIPp computed each digest with its own code; a digest we could not
    # verify would have got 403 and failed SIPp's call.
    assert returncode == 0, output[-2000:]
    assert glue.sent_methods.count(b"SIP/2.0") >= 2 * CALLS
    assert len(records.records) == CALLS
    assert {r.disposition for r in records.records} == {Disposition.ANSWERED}
