"""One head again: the branches that grew side by side (official account, video, studio, and this round's
hardening, evidence, delivery and advisor tables) meet here, so a database at the code's migrations has a
single version that `check_schema` and `alembic check` can compare.

Revision ID: 0013_one_head
"""

from __future__ import annotations

revision = "0013_one_head"
down_revision = (
    "0002_wechat_oa",
    "0007_hardening_api",
    "0007_hardening_ops",
    "0009_video_evidence",
    "0011_delivery",
    "0012_advisor",
)
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
