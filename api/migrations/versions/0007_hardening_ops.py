"""hardening (ops): the audit trail's hash chain, and recordings' encryption at rest (key id, stored hash)

Revision ID: 0007_hardening_ops
Revises: 0006_video_agents
Create Date: 2026-12-02
"""

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision = "0007_hardening_ops"
# the recording and studio_job tables come from sibling branches: they are parents, not only dependencies
down_revision = ("0006_video_agents", "0003_video", "0004_studio")
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_event") as batch:
        batch.add_column(sa.Column("chain_seq", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("prev_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch.add_column(sa.Column("row_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch.create_unique_constraint("uq_audit_event_chain_seq", ["chain_seq"])
    with op.batch_alter_table("recording") as batch:
        batch.add_column(sa.Column("key_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
        batch.add_column(sa.Column("sha256_stored", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
    _chain_existing_rows()
    # One training queued or running per deployment (older duplicates, if any, are left as they were: failed).
    op.execute(
        "UPDATE studio_job SET status = 'failed', error = 'superseded: one training at a time' "
        "WHERE kind = 'train' AND status IN ('queued', 'running') AND id NOT IN "
        "(SELECT max(id) FROM studio_job WHERE kind = 'train' AND status IN ('queued', 'running') GROUP BY deployment)"
    )
    op.create_index(
        "uq_studio_job_one_training",
        "studio_job",
        ["deployment"],
        unique=True,
        postgresql_where=sa.text("kind = 'train' AND status IN ('queued', 'running')"),
        sqlite_where=sa.text("kind = 'train' AND status IN ('queued', 'running')"),
    )


def _chain_existing_rows() -> None:
    """Rows written before the chain existed join it in id order (the same hash as the app computes)."""
    from api.audit.chain import GENESIS, hash_of

    table = sa.table(
        "audit_event",
        sa.column("id", sa.Integer()),
        sa.column("actor_kind", sa.String()),
        sa.column("actor_id", sa.Integer()),
        sa.column("action", sa.String()),
        sa.column("subject", sa.String()),
        sa.column("detail", sa.JSON()),
        sa.column("created_at", sqlmodel.sql.sqltypes.UTCDateTime()),
        sa.column("chain_seq", sa.BigInteger()),
        sa.column("prev_hash", sa.String()),
        sa.column("row_hash", sa.String()),
    )
    bind = op.get_bind()
    seq, prev = 0, GENESIS
    for row in bind.execute(sa.select(table).order_by(table.c.id)).all():
        seq += 1
        current = hash_of(row, seq, prev)
        bind.execute(table.update().where(table.c.id == row.id).values(chain_seq=seq, prev_hash=prev, row_hash=current))
        prev = current


def downgrade() -> None:
    op.drop_index("uq_studio_job_one_training", table_name="studio_job")
    with op.batch_alter_table("recording") as batch:
        batch.drop_column("sha256_stored")
        batch.drop_column("key_id")
    with op.batch_alter_table("audit_event") as batch:
        batch.drop_constraint("uq_audit_event_chain_seq", type_="unique")
        batch.drop_column("row_hash")
        batch.drop_column("prev_hash")
        batch.drop_column("chain_seq")
