"""`python -m api.audit.verify` (`make audit-verify`): check the audit trail's hash chain end to end.

Exit 0 and the head (seq and hash, to note somewhere else) when intact; exit 1 naming the first broken row
otherwise: an edited row (its hash no longer matches), a deleted one (a gap in the sequence), a row moved
or re-linked (its `prev_hash` isn't the previous row's hash), or a row outside the chain. `--expect-head
SEQ:HASH` also checks that a head noted earlier is still in the chain (a chain recomputed after an edit
changes every later hash).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from sqlalchemy import Engine, create_engine, func, inspect, select

from api.audit.chain import GENESIS, hash_of
from api.audit.models import AuditEvent
from api.settings import Settings, async_database_url, sync_database_url

BATCH = 1000


@dataclass
class Verdict:
    ok: bool
    rows: int
    head_seq: int
    head_hash: str
    broken_id: int | None = None
    broken_seq: int | None = None
    reason: str = ""

    def describe(self) -> str:
        if self.ok:
            return f"audit chain intact: {self.rows} rows, head seq={self.head_seq} hash={self.head_hash}"
        where = f"audit_event id={self.broken_id}" if self.broken_id is not None else "the chain"
        seq = f" (seq {self.broken_seq})" if self.broken_seq is not None else ""
        return f"audit chain BROKEN at {where}{seq}: {self.reason}; {self.rows} rows checked before it"


def verify_chain(engine: Engine, *, expect_head: tuple[int, str] | None = None) -> Verdict:
    """Walk the chain in order, in batches (bounded memory), stopping at the first broken row."""
    table = inspect(AuditEvent).local_table
    seq, prev, rows, noted_seen = 0, GENESIS, 0, expect_head is None
    with engine.connect() as conn:
        outside = conn.execute(select(table.c.id).where(table.c.chain_seq.is_(None)).order_by(table.c.id).limit(1))
        stray = outside.scalar()
        while True:
            batch = conn.execute(
                select(table).where(table.c.chain_seq > seq).order_by(table.c.chain_seq).limit(BATCH)
            ).all()
            for row in batch:
                expected_seq = seq + 1
                if row.chain_seq != expected_seq:
                    return Verdict(
                        False,
                        rows,
                        seq,
                        prev,
                        row.id,
                        row.chain_seq,
                        f"rows {expected_seq}..{row.chain_seq - 1} are missing",
                    )
                if row.prev_hash != prev:
                    return Verdict(False, rows, seq, prev, row.id, row.chain_seq, "it does not follow the previous row")
                if row.row_hash != hash_of(row, row.chain_seq, prev):
                    return Verdict(False, rows, seq, prev, row.id, row.chain_seq, "its content was changed")
                seq, prev, rows = row.chain_seq, row.row_hash, rows + 1
                if expect_head is not None and seq == expect_head[0]:
                    if prev != expect_head[1]:
                        return Verdict(
                            False, rows, seq, prev, row.id, seq, "the chain was recomputed: the noted head differs"
                        )
                    noted_seen = True
            if len(batch) < BATCH:
                break
        if stray is not None:
            total = conn.execute(select(func.count()).select_from(table)).scalar()
            return Verdict(False, rows, seq, prev, stray, None, f"it is outside the chain ({total} rows in the table)")
    if not noted_seen:
        assert expect_head is not None  # noted_seen starts True without one
        return Verdict(False, rows, seq, prev, None, expect_head[0], "the noted head is no longer in the chain")
    return Verdict(True, rows, seq, prev)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.audit.verify", description=__doc__.split("\n")[0])
    parser.add_argument("--database-url", help="default: the deployment's (YUNTING_DATABASE_URL / data dir)")
    parser.add_argument("--expect-head", metavar="SEQ:HASH", help="a head printed earlier, to check it still holds")
    args = parser.parse_args(argv)
    expect = None
    if args.expect_head:
        seq_text, _, hash_text = args.expect_head.partition(":")
        if not seq_text.isdigit() or len(hash_text) != 64:
            parser.error("--expect-head takes SEQ:HASH as printed by this command")
        expect = (int(seq_text), hash_text)
    url = async_database_url(args.database_url) if args.database_url else Settings().resolved_database_url
    engine = create_engine(sync_database_url(url), hide_parameters=True)
    try:
        verdict = verify_chain(engine, expect_head=expect)
    finally:
        engine.dispose()
    print(verdict.describe(), file=sys.stdout if verdict.ok else sys.stderr)
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
