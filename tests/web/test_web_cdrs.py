"""Call records in the database: migration, writer durability, list and export.

Every test runs on SQLite and PostgreSQL (see conftest.py).
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from sbc.cdr import CallRecord, CdrWriter, Disposition, HangupSide, read_call_records
from web.db import CdrRow, User, make_engine, make_sessions, upgrade
from web.services.cdrs import FALLBACK_FILE_NAME, CallRecords, DatabaseCdrWriter
from web.services.users import Role

API = "/api/v1"
REPO = Path(__file__).resolve().parents[2]


def _record(number: int, **changes) -> CallRecord:
    fields = {
        "call_id": f"call-{number}@a.example",
        "start_time": 1_700_000_000.0 + number * 60,
        "answer_time": 1_700_000_002.5 + number * 60,
        "end_time": 1_700_000_030.25 + number * 60,
        "disposition": Disposition.ANSWERED,
        "final_status": 200,
        "b_call_id": f"b-{number}",
        "a_trunk": "carrier",
        "b_trunk": "pbx",
        "calling_received": "030123",
        "calling_e164": "+4930123",
        "calling_sent": "+4930123",
        "called_received": f"0301000{number}",
        "called_e164": f"+49301000{number}",
        "called_sent": f"1000{number}",
        "hangup_side": HangupSide.CALLEE,
        "end_reason": None,
        "media": {"0.A": {"packets_received": 1500, "jitter_ms": 1.25}},
        "ipsec": {},
    }
    fields.update(changes)
    return CallRecord(**fields)


# Migration


def test_upgrade_from_0001_keeps_rows_and_adds_cdrs(database_url):
    engine = make_engine(database_url)
    upgrade(engine, "0001")
    assert "cdrs" not in inspect(engine).get_table_names()
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO users (username, password_hash, role, created_at) "
                "VALUES ('old', 'x', 'admin', '2026-01-01 00:00:00+00')"
            )
        )

    upgrade(engine)

    inspector = inspect(engine)
    columns = {column["name"] for column in inspector.get_columns("cdrs")}
    assert columns == {column.name for column in CdrRow.__table__.columns}
    indexed = {tuple(i["column_names"]) for i in inspector.get_indexes("cdrs")}
    assert {("start_time",), ("called_e164",), ("a_trunk", "start_time")} <= indexed
    with make_sessions(engine)() as session:
        assert session.scalars(select(User.username)).all() == ["old"]
    engine.dispose()


def test_every_call_record_field_has_a_column():
    columns = {column.name for column in CdrRow.__table__.columns}
    record_fields = set(_record(1).to_dict())
    assert record_fields <= columns
    assert {"ike_sa", "child_sa", "algorithms", "node", "id"} <= columns


# The writer


@pytest.fixture
def sessions(state):
    return state.sessions


def _stored(sessions) -> list[CdrRow]:
    with sessions() as session:
        return list(session.scalars(select(CdrRow).order_by(CdrRow.id)))


def test_writer_commits_every_field(sessions):
    protected_b_leg = {
        "trunk": "pbx",
        "ike_sa": "1a2b3c4d5e6f7081_92a3b4c5d6e7f809",
        "ike_algorithms": ["aes256gcm16", "prfsha384", None, "ecp384"],
        "child_sa": {"in": 0xC1A0_0001, "out": 0x0000_0B02},
        "esp_algorithms": ["aes256gcm16", None],
        "mode": "tunnel",
    }
    record = _record(1, ipsec={"b": protected_b_leg})
    writer = DatabaseCdrWriter(sessions, node="node-a")
    writer.write(record)
    assert writer.flush(timeout=30)
    writer.close()

    [row] = _stored(sessions)
    for name, value in record.to_dict().items():
        assert getattr(row, name) == value, name
    assert row.node == "node-a"
    assert row.ike_sa == "1a2b3c4d5e6f7081_92a3b4c5d6e7f809"
    assert row.child_sa == "0xc1a00001/0x00000b02"
    assert row.algorithms == "esp=aes256gcm16 ike=aes256gcm16-prfsha384-ecp384"
    assert writer.snapshot() == {"committed": 1, "diverted": 0, "queued": 0}


def test_writer_turns_engine_clock_into_unix_time(sessions):
    engine_time = _record(1, start_time=100.0, answer_time=101.0, end_time=130.0)
    writer = DatabaseCdrWriter(sessions, clock_offset=1_700_000_000.0)
    writer.write(engine_time)
    writer.close()

    [row] = _stored(sessions)
    assert (row.start_time, row.answer_time, row.end_time) == (
        1_700_000_100.0,
        1_700_000_101.0,
        1_700_000_130.0,
    )
    assert row.duration == 29.0


def test_writer_keeps_order_and_loses_nothing_at_close(sessions):
    writer = DatabaseCdrWriter(sessions)
    for number in range(300):
        writer.write(_record(number))
    writer.close()  # no flush: close must commit what is queued

    rows = _stored(sessions)
    assert [row.call_id for row in rows] == [f"call-{n}@a.example" for n in range(300)]
    with pytest.raises(ValueError):
        writer.write(_record(1))


def test_writer_write_does_not_wait_for_the_database(tmp_path):
    # A database that cannot be reached: write must still return at once.
    engine = make_engine("postgresql+psycopg://postgres@127.0.0.1:1/none")
    fallback = CdrWriter(tmp_path / "fallback.jsonl")
    writer = DatabaseCdrWriter(
        make_sessions(engine), fallback=fallback, retry_delay=0.05
    )
    started = time.monotonic()
    for number in range(50):
        writer.write(_record(number))
    assert time.monotonic() - started < 0.5

    deadline = time.monotonic() + 30
    while not writer.retrying and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer.retrying and not writer.healthy()
    writer.close()

    # Nothing committed, nothing lost: all 50 are in the fallback file.
    kept = read_call_records(tmp_path / "fallback.jsonl").records
    assert [r.call_id for r in kept] == [f"call-{n}@a.example" for n in range(50)]
    assert writer.snapshot() == {"committed": 0, "diverted": 50, "queued": 0}


def test_writer_retries_until_the_database_answers_again(database_url, tmp_path):
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = make_sessions(engine)
    # Take the table away (as a failed-over database without the schema
    # would), write, then give it back: the queued records must arrive.
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE cdrs RENAME TO cdrs_away"))
    writer = DatabaseCdrWriter(sessions, retry_delay=0.05)
    writer.write(_record(1))
    writer.write(_record(2))
    time.sleep(0.3)
    assert writer.snapshot()["committed"] == 0
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE cdrs_away RENAME TO cdrs"))
    assert writer.flush(timeout=30)
    writer.close()

    assert [row.call_id for row in _stored(sessions)][-2:] == [
        "call-1@a.example",
        "call-2@a.example",
    ]
    assert writer.diverted == 0
    engine.dispose()


def test_writer_sets_apart_only_the_records_refused(
    database_url, sessions, tmp_path, caplog
):
    fallback = CdrWriter(tmp_path / "refused.jsonl")
    writer = DatabaseCdrWriter(sessions, fallback=fallback)
    writer.write(_record(1))
    # Neither the database nor the file can hold a set: logged as lost.
    writer.write(_record(2, media={"streams": {1, 2}}))
    if database_url.startswith("postgresql"):
        # PostgreSQL refuses NUL in text; the JSON-lines file keeps it.
        writer.write(_record(3, calling_received="03\x00123"))
    writer.write(_record(4))
    writer.close()

    assert [row.call_id for row in _stored(sessions)] == [
        "call-1@a.example",
        "call-4@a.example",
    ]
    kept = read_call_records(tmp_path / "refused.jsonl").records
    if database_url.startswith("postgresql"):
        assert [(r.call_id, r.calling_received) for r in kept] == [
            ("call-3@a.example", "03\x00123")
        ]
    assert "call record lost" in caplog.text and "call-2@a.example" in caplog.text


_KILLED_WRITER = textwrap.dedent(
    """
    import json, sys, time
    from sbc.cdr import CallRecord
    from web.db import make_engine, make_sessions
    from web.services.cdrs import FALLBACK_FILE_NAME, CallRecords, DatabaseCdrWriter

    writer = DatabaseCdrWriter(make_sessions(make_engine(sys.argv[1])))
    latencies = []
    for number in range(int(sys.argv[2])):
        record = CallRecord(
            call_id=f"killed-{number}", start_time=1.0e9, end_time=1.0e9 + 5,
            disposition="busy", final_status=486,
        )
        started = time.perf_counter()
        writer.write(record)
        writer.flush()
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    print(json.dumps({
        "accepted": len(latencies),
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[int(len(latencies) * 0.99)],
    }), flush=True)
    time.sleep(600)
    """
)


def test_accepted_records_survive_kill_9(database_url, sessions):
    count = 200
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, database_url, str(count)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        figures = json.loads(child.stdout.readline())
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        child.stdout.close()

    assert figures["accepted"] == count
    stored = [row.call_id for row in _stored(sessions)]
    assert stored == [f"killed-{n}" for n in range(count)]
    print(f"\nwrite-to-commit latency: {figures}")
    # Generous for a loaded 2-core machine; the figures are printed above.
    assert figures["p99_ms"] < 2000


# The API


@pytest.fixture
def stored_calls(sessions):
    writer = DatabaseCdrWriter(sessions)
    writer.write(_record(1))
    writer.write(_record(2, disposition=Disposition.BUSY, final_status=486,
                         answer_time=None, a_trunk="other"))  # fmt: skip
    writer.write(_record(3, b_trunk="carrier", a_trunk="pbx",
                         calling_received="=HYPERLINK(\"http://x\")"))  # fmt: skip
    writer.close()


def test_list_cdrs_newest_first_with_total(client, role_headers, stored_calls):
    answer = client.get(f"{API}/cdrs", headers=role_headers[Role.VIEWER])
    assert answer.status_code == 200
    page = answer.json()
    assert page["total"] == 3
    assert [item["call_id"] for item in page["items"]] == [
        "call-3@a.example",
        "call-2@a.example",
        "call-1@a.example",
    ]
    assert page["items"][2]["media"] == {
        "0.A": {"packets_received": 1500, "jitter_ms": 1.25}
    }


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"trunk": "carrier"}, [3, 1]),
        ({"trunk": "other"}, [2]),
        ({"disposition": "busy"}, [2]),
        ({"number": "+49301000" + "3"}, [3]),
        ({"number": "030123"}, [2, 1]),
        ({"call_id": "b-2"}, [2]),
        ({"since": "2023-11-14T22:15:00Z"}, [3, 2]),
        ({"until": "2023-11-14T22:15:00+00:00"}, [1]),
        ({"since": "2023-11-14T23:15:00+01:00", "until": "2023-11-14T22:16:00"}, [2]),
        ({"limit": 1, "offset": 1}, [2]),
    ],
)
def test_list_cdrs_filters(client, role_headers, stored_calls, query, expected):
    # Calls start at 1_700_000_000 + 60 n: 22:14:20, 22:15:20, 22:16:20 UTC.
    answer = client.get(f"{API}/cdrs", params=query, headers=role_headers[Role.VIEWER])
    assert answer.status_code == 200, answer.text
    numbers = [int(i["call_id"][5]) for i in answer.json()["items"]]
    assert numbers == expected


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"disposition": "lost"}, "disposition"),
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"offset": -1}, "offset"),
        ({"since": "yesterday"}, "since"),
        ({"number": "1\x002"}, "number"),
    ],
)
def test_list_cdrs_bad_query_names_the_field(client, role_headers, query, field):
    answer = client.get(f"{API}/cdrs", params=query, headers=role_headers[Role.VIEWER])
    assert answer.status_code == 422
    assert [e["loc"] for e in answer.json()["detail"]] == [["query", field]]


def test_cdrs_need_a_token(client):
    assert client.get(f"{API}/cdrs").status_code == 401
    assert client.get(f"{API}/cdrs.csv").status_code == 401


def _csv_rows(body: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(body)))


def test_csv_export_has_every_column_and_escapes_formulas(
    client, role_headers, stored_calls
):
    answer = client.get(
        f"{API}/cdrs.csv",
        params={"trunk": "carrier"},
        headers=role_headers[Role.VIEWER],
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert "attachment" in answer.headers["content-disposition"]
    rows = _csv_rows(answer.text)
    assert [row["call_id"] for row in rows] == ["call-3@a.example", "call-1@a.example"]
    assert set(rows[0]) == {column.name for column in CdrRow.__table__.columns}
    assert rows[0]["calling_received"] == '\'=HYPERLINK("http://x")'
    assert rows[0]["calling_e164"] == "+4930123"  # a number is not a formula
    assert json.loads(rows[1]["media"])["0.A"]["packets_received"] == 1500
    assert rows[1]["end_reason"] == ""


def test_accept_text_csv_answers_csv(client, role_headers, stored_calls):
    headers = {**role_headers[Role.VIEWER], "Accept": "text/csv"}
    answer = client.get(f"{API}/cdrs", params={"disposition": "busy"}, headers=headers)
    assert answer.headers["content-type"].startswith("text/csv")
    assert [row["call_id"] for row in _csv_rows(answer.text)] == ["call-2@a.example"]


def test_csv_export_of_many_records_streams_them_all(client, role_headers, sessions):
    writer = DatabaseCdrWriter(sessions)
    for number in range(2000):
        writer.write(_record(number, call_id=f"bulk-{number:05d}"))
    writer.close()
    answer = client.get(f"{API}/cdrs.csv", headers=role_headers[Role.VIEWER])
    rows = _csv_rows(answer.text)
    assert len(rows) == 2000
    assert rows[0]["call_id"] == "bulk-01999" and rows[-1]["call_id"] == "bulk-00000"


# Wiring for sbc serve


def test_call_records_sink_counts_commits_and_merges_snapshot(sessions, tmp_path):
    records = CallRecords(sessions, tmp_path, node="node-a")
    records.sink.write(_record(1))
    records.sink.write(_record(2, disposition=Disposition.BUSY, final_status=486,
                               answer_time=None))  # fmt: skip
    assert records.writer.flush(timeout=30)
    node_snapshot = {"calls": {"active": 2, "trunks": {}}, "sip": {"sip": {}}}

    merged = records.snapshot_with(lambda: node_snapshot)()
    records.close()

    assert merged["calls"]["active"] == 2 and merged["sip"] == {"sip": {}}
    assert merged["calls"]["outcomes"]["carrier"]["in"] == {"answered": 1, "busy": 1}
    assert merged["calls"]["final_responses"] == {200: 1, 486: 1}
    assert merged["cdr"] == {"committed": 2, "diverted": 0, "queued": 0}
    assert [(row.node, row.call_id) for row in _stored(sessions)] == [
        ("node-a", "call-1@a.example"),
        ("node-a", "call-2@a.example"),
    ]
    assert (tmp_path / FALLBACK_FILE_NAME).read_bytes() == b""
