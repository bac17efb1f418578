"""NLU studio: model versions, background jobs, the NLU inbox

Revision ID: 0004_studio
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0004_studio"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nlu_model_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("model_file", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("data_hash", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("duration_s", sa.Float(), nullable=True),
        sa.Column("evaluation", sa.JSON(), nullable=True),
        sa.Column("macro_f1", sa.Float(), nullable=True),
        sa.Column("confusion_image", sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("activated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("activated_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["activated_by"],
            ["agent.id"],
        ),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["agent.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("deployment", "model_file", name="uq_nlu_model_version_file"),
    )
    with op.batch_alter_table("nlu_model_version", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_nlu_model_version_deployment"), ["deployment"], unique=False)
        batch_op.create_index(batch_op.f("ix_nlu_model_version_active"), ["active"], unique=False)

    op.create_table(
        "studio_job",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("deployment", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("stage", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("log_tail", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("version_id", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("started_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("finished_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("heartbeat_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["agent.id"],
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["nlu_model_version.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("studio_job", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_studio_job_deployment"), ["deployment"], unique=False)
        batch_op.create_index(batch_op.f("ix_studio_job_status"), ["status"], unique=False)

    op.create_table(
        "nlu_inbox_item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("predicted_intent", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("suggested_intent", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("resolved_by", sa.Integer(), nullable=True),
        sa.Column("resolved_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column("accepted_intent", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["message.id"],
        ),
        sa.ForeignKeyConstraint(
            ["resolved_by"],
            ["agent.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
    )
    with op.batch_alter_table("nlu_inbox_item", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_nlu_inbox_item_predicted_intent"), ["predicted_intent"], unique=False)
        batch_op.create_index(batch_op.f("ix_nlu_inbox_item_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("nlu_inbox_item", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_nlu_inbox_item_status"))
        batch_op.drop_index(batch_op.f("ix_nlu_inbox_item_predicted_intent"))

    op.drop_table("nlu_inbox_item")
    with op.batch_alter_table("studio_job", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_studio_job_status"))
        batch_op.drop_index(batch_op.f("ix_studio_job_deployment"))

    op.drop_table("studio_job")
    with op.batch_alter_table("nlu_model_version", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_nlu_model_version_active"))
        batch_op.drop_index(batch_op.f("ix_nlu_model_version_deployment"))

    op.drop_table("nlu_model_version")
