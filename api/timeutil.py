"""One clock for records: aware UTC (SQLModel stores it as UTC on both SQLite and PostgreSQL)."""

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, in UTC, timezone-aware."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A stored moment, timezone-aware: SQLite hands datetimes back naive (they are UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
