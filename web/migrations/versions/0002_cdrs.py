"""Call detail records in the database, with room for the IPsec fields.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_WIRE_TEXT = (
    "b_call_id",
    "a_trunk",
    "b_trunk",
    "calling_received",
    "calling_e164",
    "calling_sent",
    "called_received",
    "called_e164",
    "called_sent",
)


def upgrade() -> None:
    op.create_table(
        "cdrs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
        ),
        sa.Column("node", sa.String(128), nullable=False),
        sa.Column("call_id", sa.Text(), nullable=False),
        sa.Column("start_time", sa.Double(), nullable=False),
        sa.Column("answer_time", sa.Double(), nullable=True),
        sa.Column("end_time", sa.Double(), nullable=False),
        sa.Column("duration", sa.Double(), nullable=False),
        sa.Column("disposition", sa.String(16), nullable=False),
        sa.Column("final_status", sa.Integer(), nullable=False),
        *(sa.Column(name, sa.Text(), nullable=True) for name in _WIRE_TEXT),
        sa.Column("hangup_side", sa.String(16), nullable=True),
        sa.Column("end_reason", sa.Text(), nullable=True),
        sa.Column("media", sa.JSON(), nullable=False),
        sa.Column("ipsec", sa.JSON(), nullable=False),
        sa.Column("ike_sa", sa.Text(), nullable=True),
        sa.Column("child_sa", sa.Text(), nullable=True),
        sa.Column("algorithms", sa.Text(), nullable=True),
    )
    op.create_index("ix_cdrs_call_id", "cdrs", ["call_id"])
    op.create_index("ix_cdrs_start_time", "cdrs", ["start_time"])
    op.create_index("ix_cdrs_disposition", "cdrs", ["disposition"])
    op.create_index("ix_cdrs_calling_e164", "cdrs", ["calling_e164"])
    op.create_index("ix_cdrs_called_e164", "cdrs", ["called_e164"])
    op.create_index("ix_cdrs_a_trunk_start", "cdrs", ["a_trunk", "start_time"])
    op.create_index("ix_cdrs_b_trunk_start", "cdrs", ["b_trunk", "start_time"])


def downgrade() -> None:
    op.drop_table("cdrs")
