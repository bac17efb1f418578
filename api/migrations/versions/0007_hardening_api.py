"""hardening (API): an agent account locked after repeated wrong passwords, until a supervisor unlocks it

Revision ID: 0007_hardening_api
Revises: 0006_video_agents
Create Date: 2026-12-02
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0007_hardening_api"
down_revision = "0006_video_agents"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("agent") as batch:
        batch.add_column(sa.Column("locked_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("agent") as batch:
        batch.drop_column("locked_at")
