"""One clock for records: aware UTC (SQLModel stores it as UTC on both SQLite and PostgreSQL)."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, in UTC, timezone-aware."""
    return datetime.now(UTC)
