"""The one bound on ids that come from outside (path, query, body): every router uses these types.

Record ids live in SQL `INTEGER` columns (PostgreSQL: 32-bit), so anything past 2^31−1 names nothing;
unbounded, a huge number reaches the driver and fails there (SQLite raises OverflowError at 2^63, a 500).
Bounded here, it is a 422 with a message before any handler runs, and the bound is in the OpenAPI schema.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

MAX_RECORD_ID = 2**31 - 1

RecordId = Annotated[int, Field(ge=1, le=MAX_RECORD_ID, description=f"a record id, 1 to {MAX_RECORD_ID}", examples=[1])]
"""The id of a stored record (conversation, message, call, plan, recording, job, version, inbox item, agent)."""

AfterId = Annotated[
    int, Field(ge=0, le=MAX_RECORD_ID, description=f"only what comes after this message id (0 to {MAX_RECORD_ID})")
]
"""A cursor over message ids: 0 means from the start."""
