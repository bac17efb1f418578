"""advisor services: named advisors, working schedules, appointments, documents, guided steps

Revision ID: 0012_advisor
Revises: 0006_video_agents
Create Date: 2026-12-02
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0012_advisor"
down_revision = "0006_video_agents"
branch_labels = None
depends_on = None

UTC = sqlmodel.sql.sqltypes.UTCDateTime
STR = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "advisor_assignment",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("customer_id", sa.Integer(), sa.ForeignKey("customer.id"), nullable=False),
        sa.Column("agent_id", sa.Integer(), sa.ForeignKey("agent.id"), nullable=False),
        sa.Column("assigned_by", sa.Integer(), sa.ForeignKey("agent.id"), nullable=True),
        sa.Column("assigned_at", UTC(), nullable=False),
    )
    op.create_index("ix_advisor_assignment_customer_id", "advisor_assignment", ["customer_id"], unique=True)
    op.create_index("ix_advisor_assignment_agent_id", "advisor_assignment", ["agent_id"])

    op.create_table(
        "work_schedule",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("agent_id", sa.Integer(), sa.ForeignKey("agent.id"), nullable=False),
        sa.Column("weekday", sa.Integer(), nullable=False),
        sa.Column("start_minute", sa.Integer(), nullable=False),
        sa.Column("end_minute", sa.Integer(), nullable=False),
        sa.UniqueConstraint("agent_id", "weekday", "start_minute", name="uq_work_schedule_period"),
    )
    op.create_index("ix_work_schedule_agent_id", "work_schedule", ["agent_id"])

    op.create_table(
        "appointment",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("customer_id", sa.Integer(), sa.ForeignKey("customer.id"), nullable=False),
        sa.Column("agent_id", sa.Integer(), sa.ForeignKey("agent.id"), nullable=False),
        sa.Column("skill_group", STR(length=32), nullable=False),
        sa.Column("mode", STR(length=8), nullable=False),
        sa.Column("topic", sa.Text(), nullable=False),
        sa.Column("starts_at", UTC(), nullable=False),
        sa.Column("ends_at", UTC(), nullable=False),
        sa.Column("state", STR(length=16), nullable=False),
        sa.Column("holds_slot", sa.Boolean(), nullable=False),
        sa.Column("booked_by", STR(length=16), nullable=False),
        sa.Column("conversation_id", sa.Integer(), sa.ForeignKey("conversation.id"), nullable=True),
        sa.Column("reminder_state", STR(length=16), nullable=True),
        sa.Column("reminded_at", UTC(), nullable=True),
        sa.Column("joined_at", UTC(), nullable=True),
        sa.Column("cancelled_by", STR(length=16), nullable=True),
        sa.Column("cancel_reason", STR(length=200), nullable=True),
        sa.Column("created_at", UTC(), nullable=False),
        sa.Column("updated_at", UTC(), nullable=False),
    )
    for column in ("customer_id", "agent_id", "skill_group", "starts_at", "state"):
        op.create_index(f"ix_appointment_{column}", "appointment", [column])
    # The one guard against double booking: one slot-holding appointment per agent and start.
    op.create_index(
        "uq_appointment_agent_slot",
        "appointment",
        ["agent_id", "starts_at"],
        unique=True,
        postgresql_where=sa.text("holds_slot"),
        sqlite_where=sa.text("holds_slot"),
    )

    op.create_table(
        "document_request",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("conversation_id", sa.Integer(), sa.ForeignKey("conversation.id"), nullable=False),
        sa.Column("customer_id", sa.Integer(), sa.ForeignKey("customer.id"), nullable=False),
        sa.Column("agent_id", sa.Integer(), sa.ForeignKey("agent.id"), nullable=False),
        sa.Column("what", sa.Text(), nullable=False),
        sa.Column("state", STR(length=16), nullable=False),
        sa.Column("created_at", UTC(), nullable=False),
        sa.Column("fulfilled_at", UTC(), nullable=True),
    )
    op.create_index("ix_document_request_conversation_id", "document_request", ["conversation_id"])
    op.create_index("ix_document_request_customer_id", "document_request", ["customer_id"])

    op.create_table(
        "document",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("customer_id", sa.Integer(), sa.ForeignKey("customer.id"), nullable=False),
        sa.Column("conversation_id", sa.Integer(), sa.ForeignKey("conversation.id"), nullable=False),
        sa.Column("message_id", sa.Integer(), sa.ForeignKey("message.id"), nullable=True),
        sa.Column("request_id", sa.Integer(), sa.ForeignKey("document_request.id"), nullable=True),
        sa.Column("channel", STR(length=16), nullable=False),
        sa.Column("kind", STR(length=8), nullable=False),
        sa.Column("content_type", STR(length=64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", STR(length=64), nullable=False),
        sa.Column("stored_sha256", STR(length=64), nullable=False),
        sa.Column("vault_key_id", STR(length=32), nullable=False),
        sa.Column("storage_path", STR(length=512), nullable=False),
        sa.Column("platform_media_id", STR(length=128), nullable=True),
        sa.Column("created_at", UTC(), nullable=False),
        sa.UniqueConstraint("platform_media_id", name="uq_document_platform_media_id"),
    )
    op.create_index("ix_document_customer_id", "document", ["customer_id"])
    op.create_index("ix_document_conversation_id", "document", ["conversation_id"])
    op.create_index("ix_document_sha256", "document", ["sha256"])

    op.create_table(
        "guide",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("conversation_id", sa.Integer(), sa.ForeignKey("conversation.id"), nullable=False),
        sa.Column("customer_id", sa.Integer(), sa.ForeignKey("customer.id"), nullable=False),
        sa.Column("agent_id", sa.Integer(), sa.ForeignKey("agent.id"), nullable=False),
        sa.Column("page", STR(length=128), nullable=False),
        sa.Column("title", STR(length=64), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("current_step", sa.Integer(), nullable=False),
        sa.Column("state", STR(length=16), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("created_at", UTC(), nullable=False),
        sa.Column("updated_at", UTC(), nullable=False),
    )
    op.create_index("ix_guide_conversation_id", "guide", ["conversation_id"])
    op.create_index("ix_guide_customer_id", "guide", ["customer_id"])


def downgrade() -> None:
    for table in ("guide", "document", "document_request", "appointment", "work_schedule", "advisor_assignment"):
        op.drop_table(table)
