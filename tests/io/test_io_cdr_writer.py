"""ThreadedCdrWriter: order, Unix times, one fsync per batch, bad records."""

import logging
import math
import time

from sbc.cdr import CallRecord, CdrWriter, Disposition, read_call_records
from sbc.io.calls import ThreadedCdrWriter

OFFSET = 1_700_000_000.0


def record(n: int, **changes: object) -> CallRecord:
    fields: dict[str, object] = {
        "call_id": f"call-{n}@192.0.2.10",
        "start_time": 100.0 + n,
        "answer_time": 101.0 + n,
        "end_time": 130.0 + n,
        "disposition": Disposition.ANSWERED,
        "final_status": 200,
    }
    fields.update(changes)
    return CallRecord(**fields)  # type: ignore[arg-type]


class CountingWriter(CdrWriter):
    """A real file writer that remembers the size of each synced batch."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.batches: list[int] = []

    def write_all(self, records):  # type: ignore[no-untyped-def]
        super().write_all(records)
        self.batches.append(len(records))


def test_records_in_order_in_unix_time_sharing_fsyncs(tmp_path):
    path = tmp_path / "cdr.jsonl"
    writer = CountingWriter(path)
    threaded = ThreadedCdrWriter(writer, OFFSET, sync_interval=0.2)

    for n in range(50):
        threaded.write(record(n))
    threaded.close()

    written = read_call_records(path).records
    assert [r.call_id for r in written] == [f"call-{n}@192.0.2.10" for n in range(50)]
    assert written[7].start_time == OFFSET + 107.0
    assert written[7].answer_time == OFFSET + 108.0
    assert written[7].end_time == OFFSET + 137.0
    # Written within one interval, the records need far fewer fsyncs.
    assert sum(writer.batches) == 50
    assert len(writer.batches) <= 5


def test_a_record_is_on_disk_soon_after_its_call_ends(tmp_path):
    path = tmp_path / "cdr.jsonl"
    threaded = ThreadedCdrWriter(CdrWriter(path), OFFSET, sync_interval=0.05)
    try:
        threaded.write(record(1))

        deadline = time.monotonic() + 10.0
        while not read_call_records(path).records:
            assert time.monotonic() < deadline, "record never reached the file"
            time.sleep(0.02)
    finally:
        threaded.close()


def test_a_record_json_cannot_carry_costs_only_itself(tmp_path, caplog):
    path = tmp_path / "cdr.jsonl"
    threaded = ThreadedCdrWriter(CdrWriter(path), OFFSET, sync_interval=0.2)

    with caplog.at_level(logging.ERROR):
        threaded.write(record(1))
        threaded.write(record(2, media={"jitter": math.nan}))
        threaded.write(record(3))
        threaded.close()

    written = read_call_records(path).records
    assert [r.call_id for r in written] == ["call-1@192.0.2.10", "call-3@192.0.2.10"]
    assert "call-2@192.0.2.10 not written" in caplog.text
