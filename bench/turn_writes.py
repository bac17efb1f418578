"""A later bot turn's writes, through the ORM's unit of work and as Core statements: is the ORM the cost?

Round 4 of docs/benchmarks.md named "Core statements for the turn's writes" as the next cut, because SQLAlchemy
was 35–50 % of the app's sampled CPU. This answers it before anyone rewrites the turn: one transaction that
does what a later turn writes (read the conversation, insert the customer's message, update the conversation,
insert the bot's reply, commit), done both ways in one process, in alternating blocks, on the engine the app
makes (`api.db.create_engine`: the one-hop SQLite adapter, or psycopg). Prints CPU and wall ms per turn.

    .venv/bin/python bench/turn_writes.py [--database-url postgresql://…] [--turns 400] [--rounds 3]

The default is a scratch SQLite file. A PostgreSQL database given here is emptied (its tables dropped).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import insert, update
from sqlmodel import SQLModel
from sqlmodel.ext.asyncio.session import AsyncSession

import api.models  # noqa: F401  (every table, for create_all)
from api.conversations.models import Conversation, Direction, Message, SenderKind
from api.customers.models import Customer
from api.db import create_engine
from api.timeutil import utcnow

REPLY = "新卡激活：打开手机银行，点“我的-卡片管理-激活”，按提示输入卡号后六位和密码就可以。"
MESSAGES = Message.__table__
CONVERSATIONS = Conversation.__table__


def message(customer_id: int, conversation_id: int, *, inbound: bool, in_reply_to: int | None = None) -> Message:
    return Message(
        conversation_id=conversation_id,
        customer_id=customer_id,
        channel="miniapp",
        direction=Direction.IN if inbound else Direction.OUT,
        sender_kind=SenderKind.CUSTOMER if inbound else SenderKind.BOT,
        text="新卡怎么激活" if inbound else REPLY,
        platform_msg_id=uuid.uuid4().hex if inbound else None,
        in_reply_to=in_reply_to,
        intent="card_activation" if inbound else None,
        confidence=0.99 if inbound else None,
    )


def row(m: Message) -> dict:
    return {column.name: getattr(m, column.name) for column in MESSAGES.columns if column.name != "id"}


async def through_orm(engine, customer_id: int, conversation_id: int) -> None:
    async with AsyncSession(engine, expire_on_commit=False) as session:
        conversation = await session.get(Conversation, conversation_id)
        assert conversation is not None
        inbound = message(customer_id, conversation_id, inbound=True)
        session.add(inbound)
        await session.flush()
        conversation.intent, conversation.intent_confidence, conversation.updated_at = "card_activation", 0.99, utcnow()
        session.add(message(customer_id, conversation_id, inbound=False, in_reply_to=inbound.id))
        await session.commit()


async def as_core(engine, customer_id: int, conversation_id: int) -> None:
    async with AsyncSession(engine, expire_on_commit=False) as session:
        conversation = await session.get(Conversation, conversation_id)  # the turn reads it through the ORM either way
        assert conversation is not None
        connection = await session.connection()
        inbound = message(customer_id, conversation_id, inbound=True)
        inbound.id = (await connection.execute(insert(MESSAGES).returning(MESSAGES.c.id), row(inbound))).scalar_one()
        await connection.execute(
            update(CONVERSATIONS)
            .where(CONVERSATIONS.c.id == conversation_id)
            .values(intent="card_activation", intent_confidence=0.99, updated_at=utcnow())
        )
        reply = message(customer_id, conversation_id, inbound=False, in_reply_to=inbound.id)
        await connection.execute(insert(MESSAGES).returning(MESSAGES.c.id), row(reply))
        await session.commit()


async def main(opts) -> None:
    url = opts.database_url or f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp(prefix='yt-bench-writes-')) / 'w.db'}"
    url = url.replace("postgresql://", "postgresql+psycopg://", 1)
    engine = create_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(SQLModel.metadata.drop_all)
        await connection.run_sync(SQLModel.metadata.create_all)
    async with AsyncSession(engine, expire_on_commit=False) as session:
        customer = Customer()
        session.add(customer)
        await session.flush()
        assert customer.id is not None
        conversation = Conversation(customer_id=customer.id, current_channel="miniapp", channel_path=["miniapp"])
        session.add(conversation)
        await session.commit()
        ids = (customer.id, conversation.id)
    results: dict[str, list[tuple[float, float]]] = {"orm": [], "core": []}
    for round_ in range(opts.rounds):
        ways = [("orm", through_orm), ("core", as_core)]
        for name, way in ways if round_ % 2 == 0 else ways[::-1]:
            for _ in range(50):  # warm: statement caches, the pool
                await way(engine, *ids)
            cpu, wall = time.process_time(), time.perf_counter()
            for _ in range(opts.turns):
                await way(engine, *ids)
            per = (1000 * (time.process_time() - cpu) / opts.turns, 1000 * (time.perf_counter() - wall) / opts.turns)
            results[name].append(per)
            print(f"round {round_ + 1} {name}: {per[0]:.2f} ms CPU, {per[1]:.2f} ms wall per turn", flush=True)
    await engine.dispose()
    for name, runs in results.items():
        print(
            f"{name}: median of {len(runs)} rounds {statistics.median(r[0] for r in runs):.2f} ms CPU, "
            f"{statistics.median(r[1] for r in runs):.2f} ms wall per turn ({url.split(':')[0]})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url")
    parser.add_argument("--turns", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
