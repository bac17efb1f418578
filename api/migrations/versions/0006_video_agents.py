"""video agents: which agents may take video calls (camera, 双录 training)

Revision ID: 0006_video_agents
Revises: 0005_agents_console
Create Date: 2026-11-23
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_video_agents"
down_revision = "0005_agents_console"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing agents keep answering video calls, as they could before the flag existed.
    with op.batch_alter_table("agent") as batch:
        batch.add_column(sa.Column("video_capable", sa.Boolean(), nullable=False, server_default=sa.true()))


def downgrade() -> None:
    with op.batch_alter_table("agent") as batch:
        batch.drop_column("video_capable")
