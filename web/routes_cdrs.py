"""Call detail records over HTTP: a filtered, paged list and a CSV export.

``GET /api/v1/cdrs`` answers JSON pages, or CSV when the client asks for
``text/csv``; ``GET /api/v1/cdrs.csv`` always answers CSV. Viewers may read.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from sbc.cdr import Disposition
from web.app import ROW_ID_MAX, VIEWER, AdminState, SessionDep
from web.services import cdrs

CSV_TYPE = "text/csv"

# Text from the wire must not reach a spreadsheet as a formula: a cell that
# starts like one is prefixed with a quote (numbers such as +4930... pass).
_FORMULA_START = re.compile(r"^[=@\t\r]|^[+-](?![\d .()-]*$)")

_Text = Annotated[str | None, Query(max_length=256, pattern=r"^[^\x00]*$")]


class CdrPublic(BaseModel):
    """One stored call record; times are Unix seconds."""

    id: int
    node: str
    call_id: str
    start_time: float
    answer_time: float | None
    end_time: float
    duration: float
    disposition: Disposition
    final_status: int
    b_call_id: str | None
    a_trunk: str | None
    b_trunk: str | None
    calling_received: str | None
    calling_e164: str | None
    calling_sent: str | None
    called_received: str | None
    called_e164: str | None
    called_sent: str | None
    hangup_side: str | None
    end_reason: str | None
    media: dict[str, Any]
    ipsec: dict[str, Any]
    ike_sa: str | None
    child_sa: str | None
    algorithms: str | None


class CdrPage(BaseModel):
    total: int
    items: list[CdrPublic]


def _where(
    since: datetime | None = None,
    until: datetime | None = None,
    trunk: _Text = None,
    disposition: Disposition | None = None,
    number: _Text = None,
    call_id: _Text = None,
) -> cdrs.CdrFilter:
    value = None if disposition is None else disposition.value
    return cdrs.CdrFilter(since, until, trunk, value, number, call_id)


Where = Annotated[cdrs.CdrFilter, Depends(_where)]
_CSV_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {"content": {CSV_TYPE: {"schema": {"type": "string"}}}}
}


def cdr_router() -> APIRouter:
    router = APIRouter(tags=["cdrs"], dependencies=[VIEWER])

    @router.get("/cdrs", responses=_CSV_ANSWER, response_model=CdrPage)
    def list_cdrs(
        request: Request,
        session: SessionDep,
        where: Where,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=ROW_ID_MAX)] = 0,
    ) -> Any:
        """Call records, newest first (by start time); CSV on ``Accept: text/csv``."""
        if _wants_csv(request):
            return _csv_answer(request, where)
        total, rows = cdrs.list_cdrs(session, where, limit=limit, offset=offset)
        items = [CdrPublic.model_validate(cdrs.row_record(row)) for row in rows]
        return CdrPage(total=total, items=items)

    @router.get("/cdrs.csv", response_class=Response, responses=_CSV_ANSWER)
    def export_cdrs(request: Request, where: Where) -> Response:
        """Every matching call record as CSV (one header line, then records)."""
        return _csv_answer(request, where)

    return router


def _wants_csv(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    types = [part.split(";")[0].strip().lower() for part in accept.split(",")]
    return CSV_TYPE in types and "application/json" not in types


def _csv_answer(request: Request, where: cdrs.CdrFilter) -> Response:
    state: AdminState = request.app.state.admin
    disposition = 'attachment; filename="cdrs.csv"'
    return StreamingResponse(
        _csv_lines(state, where),
        media_type=f"{CSV_TYPE}; charset=utf-8",
        headers={"Content-Disposition": disposition},
    )


def _csv_lines(state: AdminState, where: cdrs.CdrFilter) -> Iterator[str]:
    # Streamed after the route returned: the export has its own session.
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(cdrs.PUBLIC_COLUMNS)
    with state.sessions() as session:
        for row in cdrs.iter_cdrs(session, where):
            writer.writerow(_csv_cells(cdrs.row_record(row)))
            if buffer.tell() > 64 * 1024:
                yield _drain(buffer)
    yield _drain(buffer)


def _drain(buffer: io.StringIO) -> str:
    text = buffer.getvalue()
    buffer.seek(0)
    buffer.truncate()
    return text


def _csv_cells(record: dict[str, Any]) -> list[str]:
    cells = []
    for column in cdrs.PUBLIC_COLUMNS:
        value = record[column]
        if isinstance(value, dict):
            cells.append(json.dumps(value, separators=(",", ":"), sort_keys=True))
        elif value is None:
            cells.append("")
        elif isinstance(value, str) and _FORMULA_START.match(value):
            cells.append("'" + value)
        else:
            cells.append(str(value))
    return cells
