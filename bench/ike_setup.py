"""IKEv2 responder setup rate and latency: our daemon against strongSwan.

Run as root: ``.venv/bin/python -m bench.ike_setup`` (``--quick`` for a
short run). Topology: namespaces A (192.0.2.1) and B (192.0.2.2) over a veth
pair. The responder runs in B, pinned to CPU 1: either this project's
:class:`~ipsec.ike.daemon.IkeDaemon` with a :class:`DataPlane` on uvloop,
as its own process (``python -m bench.ike_setup --responder CONFIG``), or
strongSwan's charon with kernel-libipsec (private /run, own
strongswan.conf, file log at level 1). The ``ipsec`` loggers of ours write
INFO lines to a file, the counterpart of charon's level 1.

One load generator (bench.ike_load, pinned to CPU 0) drives both
responders identically: our IKE engine as initiators in a sans-IO loop,
many initiator SPIs over 64 source ports, each setup IKE_SA_INIT + IKE_AUTH
(PSK, X25519, AES-GCM-16-128, PRF HMAC-SHA2-256) with one tunnel-mode
CHILD_SA (AES-GCM-16-128, its own /32 as TSi), then an INFORMATIONAL Delete
of the IKE_SA as soon as IKE_AUTH is answered. The responder therefore
holds only the IKE_SAs in flight; the Delete's cost is part of the CPU
figure. Initiators fake a NAT, so IKE_AUTH, the Delete and the CHILD_SAs
use UDP 4500 (all kernel-libipsec supports). Every initiator uses one
identity and sends no INITIAL_CONTACT (it would make the responder drop the
others' IKE_SAs).

DoS protection is off on both responders, so neither answers with COOKIEs
nor refuses half-open IKE_SAs: charon gets ``dos_protection = no`` and
huge cookie and block thresholds, ours a huge ``cookie_threshold`` and
``max_half_open``. charon's ``install_routes = no``: ours installs no
routes per CHILD_SA either; its IKE_SA hash table gets 4096 rows in 16
locked segments (``ikesa_table_size``, default 1 row) so that lookups stay
short while thousands of IKE_SAs are held.

Method, like bench.esp_udp: setups start on an open-loop schedule at the
offered rate for a trial; a trial is clean when every setup completes
IKE_AUTH and its Delete within the timeout, nothing fails, and the last
IKE_AUTH answer comes at most drain_allowance() after the last start (a
responder slower than the offered rate builds a backlog that shows here),
and the generator started the last setup on time. The rate grows by GROWTH
to the first unclean trial (tried ATTEMPTS times), is bisected,
and a longer trial confirms it. The responder is restarted after an
unclean trial, so leftovers never burden the next one. Reported: the
confirmed rate; the responder's CPU time per setup (user + system from
/proc, all threads), at one offered rate both sustain (STEADY_RATE; this
varies much less with other load than the rate does) and in the
confirming trial; and setup latency (IKE_SA_INIT sent to IKE_AUTH
answered, as the generator sees it) at MODEST_RATE and at the top rate.
Last, a fresh responder gets HELD_SETUPS setups at STEADY_RATE that are
left established: its resident memory growth per IKE_SA + CHILD_SA held,
then its CPU per setup at STEADY_RATE while it holds them, are reported.

Known limits: the generator runs the engine under test (both responders
face the same one, and the table gives its share of CPU 0 at the top
rate; a saturated generator is marked). All initiators share one
identity, unlike real peers.

The machine is shared, so other load moves the rates a lot (CPU per setup
much less). Each responder is measured in every round (two by default),
in alternating order; every round is printed, and the comparison takes
each responder's best round and its least disturbed modest-rate latency.
``--profile-rate R`` instead runs one trial against our responder under
cProfile and prints where its time goes (``--profile-held N``: after
leaving N IKE_SAs established).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import logging
import os
import platform
import pstats
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import esp_charon
from bench.esp_lab import OUTER_A, OUTER_B, Helper, Lab, lab, stop
from bench.esp_udp import check_prerequisites, cpu_model

RESPONDER_CPU, GENERATOR_CPU = 1, 0
# The identities bench.esp_charon's PSK entry names.
INITIATOR_ID, RESPONDER_ID = "a.bench.example", "b.bench.example"
IKE_PROPOSAL, ESP_PROPOSAL = "aes128gcm16-prfsha256-x25519", "aes128gcm16"
RESPONDER_TS, INITIATOR_NET = "10.2.0.0/24", "10.64.0.0/10"
INITIATOR_BASE, INITIATOR_COUNT = "10.64.0.1", 4_000_000
SETUP_TIMEOUT = 3.0
GROWTH = 1.5
BISECTIONS = 3
CONFIRMATIONS = 3
MODEST_RATE = 20.0
STEADY_RATE = 300.0
HELD_SETUPS = 1500
GENERATOR_LAG = 0.05
"""A trial whose last start came this share of its length late measured
less than the offered rate."""
GENERATOR_SATURATED = 0.8
"""Late with the generator this busy: the generator set the limit."""
ATTEMPTS = 3


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def drain_allowance(seconds: float) -> float:
    """How long after the last start the last IKE_AUTH answer may come:
    a backlog of 5 % of the trial's setups, plus 50 ms of latency."""
    return 0.05 * seconds + 0.05


# -- trials ---------------------------------------------------------------------


@dataclass
class Trial:
    offered: float
    seconds: float
    outcome: dict[str, Any]
    cpu_seconds: float | None
    generator_cpu: float | None
    resident_kib: int | None
    """The responder's resident memory right after the trial."""

    @property
    def generator_busy(self) -> float | None:
        """The generator's share of one CPU during the trial."""
        if self.generator_cpu is None:
            return None
        return self.generator_cpu / float(self.outcome["elapsed"])

    @property
    def started(self) -> int:
        return int(self.outcome["started"])

    @property
    def complete(self) -> bool:
        o = self.outcome
        return bool(
            o["failed"] == o["timed_out"] == 0 and o["finished"] == o["started"]
        )

    @property
    def drain(self) -> float:
        return float(self.outcome["last_completion"] - self.outcome["last_start"])

    @property
    def late(self) -> bool:
        """The generator started the last setup late (stalled or saturated)."""
        scheduled = (self.started - 1) / self.offered
        lag = float(self.outcome["last_start"]) - scheduled
        return lag > GENERATOR_LAG * self.seconds

    @property
    def generator_limited(self) -> bool:
        return self.late and (self.generator_busy or 0.0) > GENERATOR_SATURATED

    @property
    def clean(self) -> bool:
        return (
            self.complete
            and self.drain <= drain_allowance(self.seconds)
            and not self.late
        )

    def describe(self) -> str:
        o = self.outcome
        verdict = "ok" if self.clean else "UNCLEAN"
        if self.late:
            verdict += (
                " (generator saturated)" if self.generator_limited else " (stall)"
            )
        text = (
            f"    offered {self.offered:7.1f}/s x {self.seconds:.0f} s: "
            f"{o['completed']}/{o['started']} set up, {o['finished']} finished, "
            f"{o['failed']} failed, {o['timed_out']} timed out, "
            f"drain {self.drain * 1e3:.0f} ms, "
            f"median {ms(o['median'])} p95 {ms(o['p95'])} ms, "
            f"responder {self.cpu_text()} ms CPU/setup, "
            f"generator {percent(self.generator_busy)} busy  {verdict}"
        )
        if o["reasons"]:
            text += f"  {o['reasons']}"
        return text

    def cpu_text(self) -> str:
        if self.cpu_seconds is None or not self.started:
            return "-"
        return f"{self.cpu_seconds / self.started * 1e3:.2f}"


def percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f} %"


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.1f}"


def process_cpu(pid: int) -> float | None:
    """User + system CPU seconds of a process and all its threads."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    utime, stime = fields.rsplit(")", 1)[1].split()[11:13]
    return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")


def resident_kib(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


class Responder:
    """A responder process that can be restarted; ours or charon."""

    def __init__(self, start: Callable[[], subprocess.Popen[Any]]) -> None:
        self._start = start
        self.process = start()

    def restart(self) -> None:
        stop(self.process)
        self.process = self._start()

    def cpu(self) -> float | None:
        return process_cpu(self.process.pid)

    def resident_kib(self) -> int | None:
        return resident_kib(self.process.pid)


@dataclass
class Rig:
    generator: Helper
    responder: Responder

    def trial(
        self, rate: float, seconds: float, *, hold: bool = False, keep: bool = False
    ) -> Trial:
        """One trial; an unclean one restarts the responder unless ``keep``."""
        cpu_before = self.responder.cpu()
        generator_before = process_cpu(self.generator.process.pid)
        command = f"run {rate} {seconds}{' hold' if hold else ''}"
        answer = self.generator.ask(command, timeout=seconds * 4 + 60)
        cpu_after = self.responder.cpu()
        generator_after = process_cpu(self.generator.process.pid)
        outcome = json.loads(answer)
        if "error" in outcome:
            raise RuntimeError(outcome["error"])
        trial = Trial(
            rate,
            seconds,
            outcome,
            difference(cpu_before, cpu_after),
            difference(generator_before, generator_after),
            self.responder.resident_kib(),
        )
        log(trial.describe())
        if not trial.clean and not keep:
            self.responder.restart()
        time.sleep(0.3)  # let the last Deletes settle
        return trial


def difference(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


@dataclass
class Result:
    rate: float
    """Highest clean setup rate per second, confirmed by a longer trial
    unless ``confirmed`` is False."""
    top: Trial | None = None
    """The confirming trial, or the clean search trial at the highest rate."""
    confirmed: bool = True
    modest: Trial | None = None
    """Latency at MODEST_RATE."""
    steady: Trial | None = None
    """CPU per setup at STEADY_RATE, the same offered load for both."""
    held: Trial | None = None
    """Setups at STEADY_RATE left established on a fresh responder."""
    held_kib: float | None = None
    """The responder's resident memory growth per held IKE_SA + CHILD_SA."""
    crowded: Trial | None = None
    """Like ``steady``, but with the ``held`` IKE_SAs still in place."""
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_per_setup(self) -> float | None:
        return per_setup(self.top, "cpu_seconds")

    @property
    def steady_cpu_per_setup(self) -> float | None:
        return per_setup(self.steady, "cpu_seconds")

    @property
    def crowded_cpu_per_setup(self) -> float | None:
        return per_setup(self.crowded, "cpu_seconds")

    @property
    def generator_cpu_per_setup(self) -> float | None:
        return per_setup(self.top, "generator_cpu")


def per_setup(trial: Trial | None, attribute: str) -> float | None:
    seconds = None if trial is None else getattr(trial, attribute)
    if trial is None or seconds is None or not trial.started:
        return None
    return float(seconds) / trial.started


def clean_trial(rig: Rig, rate: float, seconds: float) -> Trial | None:
    """A clean trial at ``rate``, or None; an unclean one is tried again,
    since one scheduling stall of another process on the machine can cause it."""
    for _ in range(ATTEMPTS):
        trial = rig.trial(rate, seconds)
        if trial.clean:
            return trial
        if trial.generator_limited:
            return None
    return None


def search(rig: Rig, start: float, seconds: float, confirm_seconds: float) -> Result:
    """Grow the rate by GROWTH to the first unclean trial, bisect, confirm."""
    good, bad, rate = 0.0, 0.0, start
    best: Trial | None = None
    while (trial := clean_trial(rig, rate, seconds)) is not None:
        good, best = rate, trial
        rate *= GROWTH
    bad = rate
    if good == 0.0:
        good = start / GROWTH**2
    for _ in range(BISECTIONS):
        middle = (good + bad) / 2
        if trial := clean_trial(rig, middle, seconds):
            good, best = middle, trial
        else:
            bad = middle

    # A longer trial must confirm the rate; step down 10 % at a time if not.
    notes: list[str] = []
    for _ in range(CONFIRMATIONS):
        trial = rig.trial(good, confirm_seconds)
        if trial.clean:
            return Result(good, top=trial, notes=notes)
        if trial.generator_limited and "generator-limited" not in notes:
            notes.append("generator-limited")
        good *= 0.9
    notes.append("not confirmed by a longer trial")
    rate = best.offered if best else 0.0
    return Result(rate, top=best, confirmed=False, notes=notes)


# -- the responders -------------------------------------------------------------


def write_private(path: Path, content: str) -> Path:
    path.touch(mode=0o600)
    path.write_text(content)
    return path


def responder_settings(psk: str, directory: Path) -> dict[str, Any]:
    return {
        "address": OUTER_B,
        "psk": psk,
        "local_id": RESPONDER_ID,
        "remote_id": INITIATOR_ID,
        "local_ts": RESPONDER_TS,
        "remote_ts": INITIATOR_NET,
        "ike_proposal": IKE_PROPOSAL,
        "esp_proposal": ESP_PROPOSAL,
        "log": str(directory / "ours.log"),
    }


def start_ours(lab: Lab, config: Path) -> subprocess.Popen[Any]:
    """Our daemon in B; it runs until its stdin closes or it is stopped."""
    module, argv = "bench.ike_setup", ("--responder", str(config))
    return lab.b.python(module, *argv, cpu=RESPONDER_CPU).process


# The bench's strongswan.conf with DoS protection off and no routes (see above).
RESPONDER_TUNING = """\
  install_routes = no
  dos_protection = no
  cookie_threshold = 1000000
  block_threshold = 1000000
  init_limit_half_open = 0
  init_limit_job_load = 0
  ikesa_table_size = 4096
  ikesa_table_segments = 16
"""
STRONGSWAN_CONF = esp_charon.STRONGSWAN_CONF.replace(
    "  install_routes = yes\n", RESPONDER_TUNING
)
if RESPONDER_TUNING not in STRONGSWAN_CONF:
    raise RuntimeError("bench.esp_charon's strongswan.conf changed shape")


def swanctl_conf(psk: str) -> str:
    """bench.esp_charon's connection, as a responder to anyone with our suite."""
    text = esp_charon.SWANCTL_CONF.format(
        local=OUTER_B, remote="%any", local_id=RESPONDER_ID, remote_id=INITIATOR_ID,
        local_ts=RESPONDER_TS, remote_ts=INITIATOR_NET,
        esp=esp_charon.ESP_PROPOSALS["AES_GCM_16_128"], psk=psk,
    )  # fmt: skip
    proposals = "proposals = aes128gcm16-prfsha256-ecp256"
    if proposals not in text:
        raise RuntimeError("bench.esp_charon's swanctl.conf changed shape")
    return text.replace(proposals, f"proposals = {IKE_PROPOSAL}")


def start_charon(lab: Lab, psk: str, directory: Path) -> subprocess.Popen[Any]:
    directory.mkdir(parents=True, exist_ok=True)
    conf = STRONGSWAN_CONF.format(plugins=esp_charon.PLUGINS, directory=directory)
    (directory / "strongswan.conf").write_text(conf)
    swanctl = write_private(directory / "swanctl.conf", swanctl_conf(psk))
    (directory / "charon.vici").unlink(missing_ok=True)
    charon = esp_charon.start(lab.b, directory)
    # Every thread so far; threads started later inherit the mask.
    pid = str(charon.process.pid)
    subprocess.run(["taskset", "-a", "-p", "-c", str(RESPONDER_CPU), pid],
                   check=True, capture_output=True)  # fmt: skip
    loaded = charon.swanctl("--load-all", "--file", str(swanctl))
    if loaded.returncode:
        raise RuntimeError(f"swanctl --load-all: {loaded.stdout}{loaded.stderr}")
    return charon.process


# -- our responder, run in its own process ----------------------------------------


def serve_responder(config_path: Path) -> None:
    """``--responder``: the daemon on uvloop until stdin closes."""
    import uvloop

    settings = json.loads(config_path.read_text())
    handler = logging.FileHandler(settings["log"])
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(message)s"))
    ipsec_logger = logging.getLogger("ipsec")
    ipsec_logger.setLevel(logging.INFO)
    ipsec_logger.addHandler(handler)
    ipsec_logger.propagate = False
    uvloop.run(run_daemon(settings))


async def run_daemon(settings: dict[str, Any]) -> None:
    from ipsec.dataplane import DataPlane
    from ipsec.ike.config import Identity
    from ipsec.ike.connection import (
        ChildDefinition,
        ConnectionDefinition,
        parse_proposal,
        traffic_selector,
    )
    from ipsec.ike.constants import IdType, ProtocolId
    from ipsec.ike.daemon import DaemonSettings, IkeDaemon
    from ipsec.ike.keymat import PresharedKey

    loop = asyncio.get_running_loop()
    dataplane = DataPlane(loop)
    daemon = IkeDaemon(
        dataplane,
        DaemonSettings(
            settings["address"], max_half_open=1_000_000, cookie_threshold=1_000_000
        ),
    )
    child = ChildDefinition(
        "net",
        (traffic_selector(settings["local_ts"]),),
        (traffic_selector(settings["remote_ts"]),),
        (parse_proposal(settings["esp_proposal"], ProtocolId.ESP),),
    )
    daemon.load(
        ConnectionDefinition(
            name="bench",
            local_address=IPv4Address(settings["address"]),
            remote_address=None,
            local_id=Identity(IdType.ID_FQDN, settings["local_id"].encode()),
            remote_id=Identity(IdType.ID_FQDN, settings["remote_id"].encode()),
            psk=PresharedKey(bytes.fromhex(settings["psk"])),
            ike_proposals=(parse_proposal(settings["ike_proposal"], ProtocolId.IKE),),
            child=child,
            encap=True,
        )
    )
    daemon.start()
    closed = asyncio.Event()

    def on_stdin() -> None:
        if not sys.stdin.readline():
            closed.set()

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    loop.add_signal_handler(signal.SIGTERM, closed.set)
    profiler = cProfile.Profile() if settings.get("profile") else None
    if profiler is not None:
        profiler.enable()
    print("ready", flush=True)
    try:
        await closed.wait()
    finally:
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(settings["profile"])
        daemon.close()
        dataplane.close()


# -- the run --------------------------------------------------------------------


@contextmanager
def generator(lab: Lab, psk: str, directory: Path) -> Iterator[Helper]:
    settings = {
        "local": OUTER_A,
        "responder": OUTER_B,
        "psk": psk,
        "initiator_id": INITIATOR_ID,
        "responder_id": RESPONDER_ID,
        "responder_ts": RESPONDER_TS,
        "inner_base": INITIATOR_BASE,
        "inner_size": INITIATOR_COUNT,
        "ike_proposal": IKE_PROPOSAL,
        "esp_proposal": ESP_PROPOSAL,
        "timeout": SETUP_TIMEOUT,
    }
    path = write_private(directory / "generator.json", json.dumps(settings))
    helper = lab.a.python("bench.ike_load", str(path), cpu=GENERATOR_CPU)
    try:
        yield helper
    finally:
        stop(helper.process)


def measure_one(rig: Rig, arguments: argparse.Namespace, start_rate: float) -> Result:
    log("  warm-up")
    rig.trial(MODEST_RATE, 1.0)
    log(f"  latency at a modest rate, {MODEST_RATE:.0f}/s")
    modest = rig.trial(MODEST_RATE, arguments.modest_seconds)
    log(f"  CPU per setup at {STEADY_RATE:.0f}/s")
    steady = clean_trial(rig, STEADY_RATE, arguments.confirm_seconds)
    log("  search")
    result = search(rig, start_rate, arguments.seconds, arguments.confirm_seconds)
    result.modest, result.steady = modest, steady
    log(f"  {HELD_SETUPS} held, not deleted, set up at {STEADY_RATE:.0f}/s")
    result.held, result.held_kib = hold(rig, HELD_SETUPS / STEADY_RATE)
    log(f"  CPU per setup at {STEADY_RATE:.0f}/s while those are held")
    result.crowded = rig.trial(STEADY_RATE, arguments.confirm_seconds, keep=True)
    for label, trial in (("holding", result.held), ("while held", result.crowded)):
        if not trial.clean:
            outcome = trial.outcome
            result.notes.append(
                f"{label}: {outcome['completed']} of {outcome['started']} set up, "
                f"p95 {ms(outcome['p95'])} ms"
            )
    return result


def hold(rig: Rig, seconds: float) -> tuple[Trial, float | None]:
    """Set up IKE_SAs on a fresh responder and leave them: memory per setup."""
    rig.responder.restart()
    time.sleep(0.5)
    before = rig.responder.resident_kib()
    trial = rig.trial(STEADY_RATE, seconds, hold=True, keep=True)
    after = trial.resident_kib
    if before is None or after is None or not trial.outcome["completed"]:
        return trial, None
    return trial, (after - before) / trial.outcome["completed"]


@contextmanager
def bench_lab() -> Iterator[tuple[Lab, Helper, str, Path]]:
    """Namespaces, the generator in A, a fresh PSK and a private directory."""
    psk = secrets.token_hex(32)
    with (
        tempfile.TemporaryDirectory(prefix="ike-bench-") as temporary,
        lab() as the_lab,
    ):
        directory = Path(temporary)
        with generator(the_lab, psk, directory) as load:
            yield the_lab, load, psk, directory


def starter(
    name: str, the_lab: Lab, psk: str, directory: Path, profile: Path | None = None
) -> Callable[[], subprocess.Popen[Any]]:
    if name == "strongswan":
        return lambda: start_charon(the_lab, psk, directory / "charon")
    settings = responder_settings(psk, directory)
    settings["profile"] = str(profile) if profile else None
    config = write_private(directory / "ours.json", json.dumps(settings))
    return lambda: start_ours(the_lab, config)


def measure(arguments: argparse.Namespace) -> dict[str, list[Result]]:
    """Every responder once per round; the order alternates between rounds,
    so a burst of other load on the machine hits neither one alone."""
    results: dict[str, list[Result]] = {name: [] for name in arguments.responders}
    with bench_lab() as (the_lab, load, psk, directory):
        for round_number in range(arguments.rounds):
            order = list(arguments.responders)
            if round_number % 2:
                order.reverse()
            for name in order:
                log(f"round {round_number + 1}: {LABELS[name]}")
                responder = Responder(starter(name, the_lab, psk, directory))
                try:
                    rig = Rig(load, responder)
                    results[name].append(
                        measure_one(rig, arguments, arguments.start_rate)
                    )
                finally:
                    stop(responder.process)
    return results


def profile_ours(arguments: argparse.Namespace) -> None:
    """One trial against our responder under cProfile; the top functions.

    With ``--profile-held N``, N setups are first left established (and
    profiled too), to show what grows with the number of IKE_SAs held.
    """
    rate, seconds, held = arguments.profile_rate, arguments.confirm_seconds, 0
    with bench_lab() as (the_lab, load, psk, directory):
        profile = directory / "responder.prof"
        responder = Responder(starter("ours", the_lab, psk, directory, profile))
        rig = Rig(load, responder)
        try:
            if arguments.profile_held:
                held_seconds = arguments.profile_held / STEADY_RATE
                trial = rig.trial(STEADY_RATE, held_seconds, hold=True, keep=True)
                held = trial.outcome["completed"]
            trial = rig.trial(rate, seconds, keep=True)
        finally:
            stop(responder.process)  # SIGTERM: the responder writes its profile
        if arguments.profile_output is not None:
            shutil.copy(profile, arguments.profile_output)
        statistics = pstats.Stats(str(profile))
        print(f"{trial.started} setups at {rate:.0f}/s, {held} held, under cProfile")
        statistics.sort_stats("tottime").print_stats(35)
        statistics.sort_stats("cumulative").print_stats(45)


LABELS = {
    "ours": "ours: IkeDaemon + DataPlane",
    "strongswan": "strongSwan 5.9 charon",
}


def best(rounds: list[Result]) -> Result:
    """The round with the highest clean rate, confirmed or not: a longer
    trial fails more often for other load than for the responder."""
    return max(rounds, key=lambda result: result.rate)


def least(values: list[float | None]) -> float | None:
    """The least disturbed round's figure."""
    return min((value for value in values if value is not None), default=None)


def modest_median(rounds: list[Result]) -> float | None:
    return least([r.modest.outcome["median"] if r.modest else None for r in rounds])


def steady_cpu(rounds: list[Result]) -> float | None:
    return least([r.steady_cpu_per_setup for r in rounds])


HEADER = (
    f"{'responder (a row per round)':<28} {'setups/s':>9} "
    f"{f'CPU ms @{STEADY_RATE:.0f}/s':>13} {'CPU ms @top':>11} "
    f"{f'lat@{MODEST_RATE:.0f}/s med/p95':>18} {'lat@top med/p95':>16} "
    f"{'RSS MiB':>7} {'KiB/held':>8} {'CPU ms held':>11} {'gen busy':>8}"
)


def report(
    results: dict[str, list[Result]], loads: tuple[str, str], began: str
) -> None:
    print(f"IKEv2 responder: IKE_SA + CHILD_SA setups per second ({began})")
    print(f"machine: {platform.machine()}, {cpu_model()}, {os.cpu_count()} CPUs, "
          f"kernel {platform.release()}")  # fmt: skip
    print(f"uptime before: {loads[0]}\nuptime after:  {loads[1]}")
    print(f"suite: {IKE_PROPOSAL} (IKE), {ESP_PROPOSAL} (ESP), PSK; Delete after setup")
    print("CPU: the responder's user + system time per setup; latencies in ms;")
    print("KiB/held: resident memory growth per IKE_SA + CHILD_SA left established;")
    print(f"CPU ms held: CPU per setup at {STEADY_RATE:.0f}/s while those are held;")
    print("* = the highest clean search rate, not confirmed by a longer trial")
    print()
    print(HEADER)
    for name, rounds in results.items():
        for result in rounds:
            print(row(name, result))
    ours, swan = results.get("ours"), results.get("strongswan")
    if ours and swan and best(swan).rate:
        print()
        print("ours / strongSwan (targets: rate >= 1x, latency <= 1.5x):")
        top_ours, top_swan = best(ours), best(swan)
        print(f"  best rate {top_ours.rate / top_swan.rate:.2f}x", end="")
        if not (top_ours.confirmed and top_swan.confirmed):
            print(" (not both confirmed)", end="")
        for label, mine, theirs in (
            (f"CPU per setup at {STEADY_RATE:.0f}/s", steady_cpu(ours), steady_cpu(swan)),
            (f"median latency at {MODEST_RATE:.0f}/s", modest_median(ours),
             modest_median(swan)),
        ):  # fmt: skip
            if mine and theirs:
                print(f", {label} {mine / theirs:.2f}x", end="")
        print()
    summary = {
        "benchmark": "ike_setup",
        "date": began,
        "load_before": loads[0],
        "load_after": loads[1],
        "results": {n: [as_json(r) for r in rounds] for n, rounds in results.items()},
    }
    print(json.dumps(summary))


def row(name: str, result: Result) -> str:
    def latency(trial: Trial | None) -> str:
        if trial is None:
            return "-"
        return f"{ms(trial.outcome['median'])}/{ms(trial.outcome['p95'])}"

    def cpu(seconds: float | None) -> str:
        return "-" if seconds is None else f"{seconds * 1e3:.2f}"

    top, held = result.top, result.held_kib
    rss = top.resident_kib if top else None
    rate = f"{result.rate:.0f}{'' if result.confirmed else '*'}"
    notes = f"  ({', '.join(result.notes)})" if result.notes else ""
    return (
        f"{LABELS[name]:<28} {rate:>9} {cpu(result.steady_cpu_per_setup):>13} "
        f"{cpu(result.cpu_per_setup):>11} {latency(result.modest):>18} "
        f"{latency(top):>16} {'-' if rss is None else f'{rss / 1024:.0f}':>7} "
        f"{'-' if held is None else f'{held:.1f}':>8} "
        f"{cpu(result.crowded_cpu_per_setup):>11} "
        f"{percent(top.generator_busy if top else None):>8}{notes}"
    )


def as_json(result: Result) -> dict[str, Any]:
    def latency(trial: Trial | None) -> dict[str, Any] | None:
        if trial is None:
            return None
        return {"rate": round(trial.offered, 1),
                "median_ms": scale(trial.outcome["median"]),
                "p95_ms": scale(trial.outcome["p95"])}  # fmt: skip

    top = result.top
    return {
        "setups_per_second": round(result.rate, 1),
        "confirmed": result.confirmed,
        "cpu_ms_per_setup_steady": scale(result.steady_cpu_per_setup),
        "cpu_ms_per_setup_top": scale(result.cpu_per_setup),
        "generator_cpu_ms_per_setup": scale(result.generator_cpu_per_setup),
        "latency_modest": latency(result.modest),
        "latency_top": latency(top),
        "resident_kib": top.resident_kib if top else None,
        "held_setups": result.held.outcome["completed"] if result.held else None,
        "cpu_ms_per_setup_while_held": scale(result.crowded_cpu_per_setup),
        "crowded_trial_clean": result.crowded.clean if result.crowded else None,
        "resident_kib_per_held_setup": round(result.held_kib, 2)
        if result.held_kib is not None
        else None,
        "generator_busy": round(top.generator_busy, 3)
        if top and top.generator_busy
        else None,
        "notes": result.notes,
    }


def scale(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description="IKEv2 responder setup rates")
    parser.add_argument("--quick", action="store_true", help="short trials")
    parser.add_argument("--seconds", type=float, help="search trial length")
    parser.add_argument("--confirm-seconds", type=float)
    parser.add_argument("--modest-seconds", type=float)
    parser.add_argument("--rounds", type=int, help="measurements of each responder")
    parser.add_argument("--start-rate", type=float, default=50.0)
    parser.add_argument(
        "--responders", nargs="+", choices=list(LABELS), default=list(LABELS)
    )
    parser.add_argument(
        "--profile-rate",
        type=float,
        help="instead: profile our responder in one trial at this rate",
    )
    parser.add_argument(
        "--profile-held", type=int, default=0, help="with --profile-rate: hold first"
    )
    parser.add_argument("--profile-output", type=Path, help="keep the pstats file")
    parser.add_argument("--responder", type=Path, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.responder is not None:
        serve_responder(arguments.responder)
        return
    arguments.seconds = arguments.seconds or (1.5 if arguments.quick else 3.0)
    arguments.confirm_seconds = arguments.confirm_seconds or (
        3.0 if arguments.quick else 6.0
    )
    arguments.rounds = arguments.rounds or (1 if arguments.quick else 2)
    arguments.modest_seconds = arguments.modest_seconds or (
        5.0 if arguments.quick else 15.0
    )
    check_prerequisites()
    if arguments.profile_rate:
        profile_ours(arguments)
        return
    load_before = uptime()
    began = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    started = time.monotonic()
    results = measure(arguments)
    report(results, (load_before, uptime()), began)
    print(f"run time {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
