"""Call records: round trip, durability across SIGKILL, torn lines skipped."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sbc.cdr import (
    CDR_FILE_NAME,
    CallRecord,
    CdrWriter,
    Disposition,
    HangupSide,
    disposition_for,
    encode_record,
    read_call_records,
)


def record(n, **changes):
    base = {
        "call_id": f"call-{n}@192.0.2.10",
        "start_time": 1_700_000_000.0 + n,
        "answer_time": 1_700_000_002.5 + n,
        "end_time": 1_700_000_062.5 + n,
        "disposition": Disposition.ANSWERED,
        "final_status": 200,
        "b_call_id": f"b-{n}",
        "a_trunk": "pbx",
        "b_trunk": "carrier",
        "calling_received": "5550101",
        "calling_e164": "+15550101",
        "calling_sent": "15550101",
        "called_received": "02071234567",
        "called_e164": "+442071234567",
        "called_sent": "00442071234567",
        "hangup_side": HangupSide.CALLER,
    }
    base.update(changes)
    return CallRecord(**base)


def test_write_read_back(tmp_path):
    path = tmp_path / "cdr.jsonl"
    records = [record(n) for n in range(5)]

    with CdrWriter(path) as writer:
        for item in records:
            writer.write(item)

    result = read_call_records(path)
    assert result.records == records
    assert result.skipped == 0


def test_lines_are_plain_json_with_duration(tmp_path):
    path = tmp_path / "cdr.jsonl"
    with CdrWriter(path) as writer:
        writer.write(record(1, media={"a_leg": {"packets": 3000, "loss": 0.01}}))

    lines = path.read_bytes().splitlines(keepends=True)
    data = json.loads(lines[0])

    assert len(lines) == 1 and lines[0].endswith(b"\n")
    assert data["duration"] == 60.0
    assert data["disposition"] == "answered" and data["hangup_side"] == "caller"
    assert data["media"] == {"a_leg": {"packets": 3000, "loss": 0.01}}
    assert data["ipsec"] == {}


def test_unanswered_duration_zero():
    item = record(
        1,
        answer_time=None,
        end_time=1_700_000_030.0,
        disposition=Disposition.NO_ANSWER,
        final_status=480,
    )

    assert item.duration == 0.0


def test_torn_last_line_skipped(tmp_path):
    path = tmp_path / "cdr.jsonl"
    with CdrWriter(path) as writer:
        for n in range(3):
            writer.write(record(n))
    whole = encode_record(record(3))
    with path.open("ab") as stream:
        stream.write(whole[: len(whole) // 2])  # a crash mid-write

    result = read_call_records(path)

    assert [r.call_id for r in result.records] == [record(n).call_id for n in range(3)]
    assert result.skipped == 1


def test_writer_ends_torn_line_before_appending(tmp_path):
    path = tmp_path / "cdr.jsonl"
    with CdrWriter(path) as writer:
        writer.write(record(0))
    with path.open("ab") as stream:
        stream.write(encode_record(record(1))[:40])

    with CdrWriter(path) as writer:
        writer.write(record(2))

    result = read_call_records(path)
    assert [r.call_id for r in result.records] == [record(0).call_id, record(2).call_id]
    assert result.skipped == 1


def test_damaged_lines_skipped(tmp_path):
    path = tmp_path / "cdr.jsonl"
    good = encode_record(record(0))
    path.write_bytes(
        good
        + b"\n"  # blank: not counted
        + b"{not json\n"
        + b"[1, 2]\n"
        + b'{"call_id": "x", "start_time": "yesterday"}\n'
        + b"\xff\xfe\n"
        + encode_record(record(1))
    )

    result = read_call_records(path)

    assert [r.call_id for r in result.records] == [record(0).call_id, record(1).call_id]
    assert result.skipped == 4


def test_unknown_keys_from_newer_writers_ignored(tmp_path):
    path = tmp_path / "cdr.jsonl"
    data = record(7).to_dict() | {"carbon_grams": 3}
    path.write_text(json.dumps(data) + "\n")

    assert read_call_records(path).records == [record(7)]


def test_in_data_dir_creates_directory(tmp_path):
    data_dir = tmp_path / "data" / "node1"

    with CdrWriter.in_data_dir(data_dir) as writer:
        writer.write(record(0))

    assert (data_dir / CDR_FILE_NAME).exists()
    assert writer.path == data_dir / CDR_FILE_NAME


def test_write_after_close_refused(tmp_path):
    writer = CdrWriter(tmp_path / "cdr.jsonl")
    writer.close()
    writer.close()

    with pytest.raises(ValueError):
        writer.write(record(0))


def test_unencodable_media_refused_before_writing(tmp_path):
    path = tmp_path / "cdr.jsonl"
    with CdrWriter(path) as writer:
        with pytest.raises(ValueError):
            writer.write(record(0, media={"jitter": math.nan}))
        writer.write(record(1))

    assert [r.call_id for r in read_call_records(path).records] == [record(1).call_id]


def test_reopen_after_rotation(tmp_path):
    path = tmp_path / "cdr.jsonl"
    with CdrWriter(path) as writer:
        writer.write(record(0))
        path.rename(tmp_path / "cdr.jsonl.1")
        writer.reopen()
        writer.write(record(1))

    assert [r.call_id for r in read_call_records(path).records] == [record(1).call_id]


@pytest.mark.parametrize(
    "changes",
    [
        {"end_time": 1_699_999_999.0},  # before start
        {"answer_time": 1_700_000_100.0},  # after end
        {"final_status": 99},
        {"final_status": "200"},
        {"start_time": math.inf},
        {"call_id": ""},
        {"a_trunk": 5},
        {"disposition": "exploded"},
        {"hangup_side": "nobody"},
        {"media": []},
    ],
)
def test_invalid_record_refused(changes):
    with pytest.raises(ValueError):
        record(0, **changes)


@pytest.mark.parametrize(
    ("status", "cancelled", "disposition"),
    [
        (200, False, Disposition.ANSWERED),
        (487, False, Disposition.CANCELLED),
        (486, True, Disposition.CANCELLED),
        (486, False, Disposition.BUSY),
        (600, False, Disposition.BUSY),
        (480, False, Disposition.NO_ANSWER),
        (408, False, Disposition.NO_ANSWER),
        (503, False, Disposition.FAILED),
        (404, False, Disposition.FAILED),
    ],
)
def test_disposition_for(status, cancelled, disposition):
    assert disposition_for(status, cancelled=cancelled) == disposition


texts = st.none() | st.text(max_size=30)
figures = st.dictionaries(
    st.text(max_size=10),
    st.integers(-(2**53), 2**53) | st.floats(allow_nan=False, allow_infinity=False),
    max_size=4,
)


@st.composite
def records(draw):
    start = draw(st.floats(0, 2e9))
    end = start + draw(st.floats(0, 1e5))
    answered = draw(st.booleans())
    answer = draw(st.floats(start, end)) if answered else None
    return CallRecord(
        call_id=draw(st.text(min_size=1, max_size=40)),
        start_time=start,
        answer_time=answer,
        end_time=end,
        disposition=draw(st.sampled_from(Disposition)),
        final_status=draw(st.integers(100, 699)),
        a_trunk=draw(texts),
        called_received=draw(texts),
        called_e164=draw(texts),
        hangup_side=draw(st.none() | st.sampled_from(HangupSide)),
        media=draw(figures),
        ipsec=draw(figures),
    )


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.lists(records(), max_size=5))
def test_any_records_round_trip(tmp_path, items):
    path = tmp_path / f"cdr-{time.monotonic_ns()}.jsonl"
    with CdrWriter(path) as writer:
        for item in items:
            writer.write(item)

    assert read_call_records(path).records == items


# Durability: a writer killed with SIGKILL loses no acknowledged record.

REPO = Path(__file__).parents[2]

WRITER = textwrap.dedent(
    """
    import sys, time
    from sbc.cdr import CallRecord, CdrWriter, Disposition

    path, padding = sys.argv[1], int(sys.argv[2])
    deadline = time.monotonic() + 20
    with CdrWriter(path) as writer:
        for n in range(100000):
            if time.monotonic() > deadline:
                break
            writer.write(CallRecord(
                call_id=f"kill-{n}", start_time=1.0, end_time=2.0,
                disposition=Disposition.FAILED, final_status=503,
                media={"padding": "x" * padding}))
            sys.stdout.write(f"{n}\\n")
            sys.stdout.flush()
    """
)


@pytest.mark.parametrize("padding", [0, 200_000], ids=["small", "large"])
def test_sigkill_mid_stream_loses_no_acknowledged_record(tmp_path, padding):
    path = tmp_path / "cdr.jsonl"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(padding)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    acknowledged = []
    try:
        deadline = time.monotonic() + 30
        while len(acknowledged) < 150 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acknowledged.append(int(line))
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
        child.stdout.close()

    assert child.returncode == -signal.SIGKILL
    assert len(acknowledged) == 150
    result = read_call_records(path)
    written = [int(r.call_id.removeprefix("kill-")) for r in result.records]
    # Every acknowledged record is there, in order, and nothing else but
    # possibly the one being written when the signal landed.
    assert written[: len(acknowledged)] == acknowledged
    assert len(written) - len(acknowledged) in (0, 1)
    assert written == list(range(len(written)))
    assert result.skipped in (0, 1)
