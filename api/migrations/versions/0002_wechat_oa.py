"""official account: outbound messages kept pending until the customer's next interaction

Revision ID: 0002_wechat_oa
Revises: 0001
Create Date: 2026-11-23
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0002_wechat_oa"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "oa_pending_message",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.Integer(), nullable=False),
        sa.Column("conversation_id", sa.Integer(), nullable=False),
        sa.Column("status", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("reason", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("updated_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column("delivered_at", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["conversation_id"], ["conversation.id"]),
        sa.ForeignKeyConstraint(["customer_id"], ["customer.id"]),
        sa.ForeignKeyConstraint(["message_id"], ["message.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("message_id"),
    )
    with op.batch_alter_table("oa_pending_message", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_oa_pending_message_customer_id"), ["customer_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_oa_pending_message_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("oa_pending_message", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_oa_pending_message_status"))
        batch_op.drop_index(batch_op.f("ix_oa_pending_message_customer_id"))
    op.drop_table("oa_pending_message")
