"""agents console: internal notes, CSAT, first response, requeue bookkeeping

Revision ID: 0005_agents_console
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0005_agents_console"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("conversation") as batch:
        batch.add_column(sa.Column("csat", sa.Integer(), nullable=True))
    with op.batch_alter_table("message") as batch:
        batch.add_column(sa.Column("internal", sa.Boolean(), nullable=False, server_default=sa.false()))
    with op.batch_alter_table("escalation") as batch:
        batch.add_column(sa.Column("first_response_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("requeue_count", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("queued_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False, server_default=sa.func.now())
        )


def downgrade() -> None:
    with op.batch_alter_table("escalation") as batch:
        batch.drop_column("queued_at")
        batch.drop_column("requeue_count")
        batch.drop_column("first_response_at")
    with op.batch_alter_table("message") as batch:
        batch.drop_column("internal")
    with op.batch_alter_table("conversation") as batch:
        batch.drop_column("csat")
