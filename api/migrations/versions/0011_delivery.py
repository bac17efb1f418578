"""delivery: each agent message's delivery state, and the subscribe messages customers granted

Revision ID: 0011_delivery
Revises: 0006_video_agents
Create Date: 2026-12-02
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0011_delivery"
down_revision = "0006_video_agents"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "message_delivery",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("message_id", sa.Integer(), sa.ForeignKey("message.id"), nullable=False, unique=True),
        sa.Column("customer_id", sa.Integer(), sa.ForeignKey("customer.id"), nullable=False),
        sa.Column("conversation_id", sa.Integer(), sa.ForeignKey("conversation.id"), nullable=False),
        sa.Column("agent_id", sa.Integer(), sa.ForeignKey("agent.id"), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("route", sa.String(16), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.String(64), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("delivered_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("read_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    )
    op.create_index("ix_message_delivery_customer_id", "message_delivery", ["customer_id"])
    op.create_index("ix_message_delivery_conversation_id", "message_delivery", ["conversation_id"])
    op.create_index("ix_message_delivery_state", "message_delivery", ["state"])
    op.create_table(
        "subscribe_grant",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("customer_id", sa.Integer(), sa.ForeignKey("customer.id"), nullable=False),
        sa.Column("template_id", sa.String(64), nullable=False),
        sa.Column("remaining", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.UniqueConstraint("customer_id", "template_id", name="uq_subscribe_grant"),
    )
    op.create_index("ix_subscribe_grant_customer_id", "subscribe_grant", ["customer_id"])


def downgrade() -> None:
    op.drop_table("subscribe_grant")
    op.drop_table("message_delivery")
