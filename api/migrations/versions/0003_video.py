"""video calls and recordings: consent, calls, per-party recordings, call timeline, identity checks,
repayment plans

Revision ID: 0003_video
Revises: 0001 (a branch of its own: the app upgrades to every head)
Create Date: 2026-11-23
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0003_video"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "call_consent",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("notice_version", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("notice_sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("user_agent", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=True),
        sa.Column("client_ip", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("call_consent", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_call_consent_conversation_id"), ["conversation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_call_consent_customer_id"), ["customer_id"], unique=False)

    op.create_table(
        "video_call",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("escalation_id", sa.Integer(), nullable=True),
        sa.Column("consent_id", sa.Integer(), nullable=True),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("end_reason", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column("skill_group", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("rung_agent_id", sa.Integer(), nullable=True),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        sa.Column("media_worker", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column("ring_deadline", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("ringing_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("accepted_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("connected_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("ended_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agent.id"],
        ),
        sa.ForeignKeyConstraint(
            ["consent_id"],
            ["call_consent.id"],
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
        ),
        sa.ForeignKeyConstraint(
            ["escalation_id"],
            ["escalation.id"],
        ),
        sa.ForeignKeyConstraint(
            ["rung_agent_id"],
            ["agent.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("video_call", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_video_call_agent_id"), ["agent_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_video_call_conversation_id"), ["conversation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_video_call_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_video_call_ring_deadline"), ["ring_deadline"], unique=False)
        batch_op.create_index(batch_op.f("ix_video_call_state"), ["state"], unique=False)

    op.create_table(
        "call_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("actor_kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("actor_id", sa.Integer(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["video_call.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("call_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_call_event_call_id"), ["call_id"], unique=False)

    op.create_table(
        "identity_check",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("method", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("result", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("call_offset_s", sa.Float(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agent.id"],
        ),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["video_call.id"],
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("identity_check", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_identity_check_call_id"), ["call_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_identity_check_conversation_id"), ["conversation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_identity_check_customer_id"), ["customer_id"], unique=False)

    op.create_table(
        "recording",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("party", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=True),
        sa.Column("consent_id", sa.Integer(), nullable=True),
        sa.Column("path", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
        sa.Column("content_type", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("ended_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("has_audio", sa.Boolean(), nullable=False),
        sa.Column("has_video", sa.Boolean(), nullable=False),
        sa.Column("frames", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agent.id"],
        ),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["video_call.id"],
        ),
        sa.ForeignKeyConstraint(
            ["consent_id"],
            ["call_consent.id"],
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("recording", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_recording_call_id"), ["call_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_recording_conversation_id"), ["conversation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_recording_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_recording_status"), ["status"], unique=False)

    op.create_table(
        "repayment_plan",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("agent_id", sa.Integer(), nullable=False),
        sa.Column("terms", sa.JSON(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("state", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("recording_ids", sa.JSON(), nullable=False),
        sa.Column("answer_offset_s", sa.Float(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("answered_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["agent_id"],
            ["agent.id"],
        ),
        sa.ForeignKeyConstraint(
            ["call_id"],
            ["video_call.id"],
        ),
        sa.ForeignKeyConstraint(
            ["conversation_id"],
            ["conversation.id"],
        ),
        sa.ForeignKeyConstraint(
            ["customer_id"],
            ["customer.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("repayment_plan", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_repayment_plan_call_id"), ["call_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_repayment_plan_conversation_id"), ["conversation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_repayment_plan_customer_id"), ["customer_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("repayment_plan", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_repayment_plan_customer_id"))
        batch_op.drop_index(batch_op.f("ix_repayment_plan_conversation_id"))
        batch_op.drop_index(batch_op.f("ix_repayment_plan_call_id"))

    op.drop_table("repayment_plan")
    with op.batch_alter_table("recording", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_recording_status"))
        batch_op.drop_index(batch_op.f("ix_recording_customer_id"))
        batch_op.drop_index(batch_op.f("ix_recording_conversation_id"))
        batch_op.drop_index(batch_op.f("ix_recording_call_id"))

    op.drop_table("recording")
    with op.batch_alter_table("identity_check", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_identity_check_customer_id"))
        batch_op.drop_index(batch_op.f("ix_identity_check_conversation_id"))
        batch_op.drop_index(batch_op.f("ix_identity_check_call_id"))

    op.drop_table("identity_check")
    with op.batch_alter_table("call_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_event_call_id"))

    op.drop_table("call_event")
    with op.batch_alter_table("video_call", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_video_call_state"))
        batch_op.drop_index(batch_op.f("ix_video_call_ring_deadline"))
        batch_op.drop_index(batch_op.f("ix_video_call_customer_id"))
        batch_op.drop_index(batch_op.f("ix_video_call_conversation_id"))
        batch_op.drop_index(batch_op.f("ix_video_call_agent_id"))

    op.drop_table("video_call")
    with op.batch_alter_table("call_consent", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_consent_customer_id"))
        batch_op.drop_index(batch_op.f("ix_call_consent_conversation_id"))

    op.drop_table("call_consent")
