"""video evidence: what each recording holds (codecs as received, frames, gaps, A/V difference, transcoding)

Revision ID: 0009_video_evidence
Revises: 0006_video_agents
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0009_video_evidence"
# the recording table is created on a sibling branch (0003): a parent, not only a dependency
down_revision = ("0006_video_agents", "0003_video")
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows recorded before this revision were re-encoded H.264/AAC MP4s; their new columns stay empty (unknown).
    with op.batch_alter_table("recording") as batch:
        batch.add_column(sa.Column("video_codec", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("audio_codec", sa.String(length=16), nullable=True))
        batch.add_column(sa.Column("frames_received", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("frames_written", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("gaps", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("av_offset_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("transcoded", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column("issues", sa.JSON(), nullable=False, server_default="[]"))


def downgrade() -> None:
    with op.batch_alter_table("recording") as batch:
        for column in ("issues", "transcoded", "av_offset_s", "gaps", "frames_written", "frames_received"):
            batch.drop_column(column)
        batch.drop_column("audio_codec")
        batch.drop_column("video_codec")
