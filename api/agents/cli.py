"""Admin CLI: `python -m api.agents.cli create --username u --password p --skills cards,general`."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys

from api.agents import service
from api.db import create_engine, migrate, unit_of_work
from api.errors import Conflict
from api.settings import Settings


async def _create(settings: Settings, args: argparse.Namespace, password: str) -> int:
    await asyncio.to_thread(migrate, settings.resolved_database_url)
    engine = create_engine(settings.resolved_database_url)
    try:
        async with unit_of_work(engine) as session:
            agent = await service.create(
                session,
                username=args.username,
                password=password,
                display_name=args.display_name,
                role=args.role,
                skills=[s for s in args.skills.split(",") if s],
                capacity=args.capacity,
                video_capable=not args.no_video,
            )
            video = "video agent" if agent.video_capable else "no video"
            print(f"created {agent.role} {agent.username!r} (id {agent.id}) skills={agent.skills} ({video})")
    finally:
        await engine.dispose()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yunting-agents")
    sub = parser.add_subparsers(dest="command", required=True)
    create = sub.add_parser("create", help="create an agent or other console user")
    create.add_argument("--username", required=True)
    create.add_argument("--display-name")
    create.add_argument("--role", default="agent", choices=["agent", "supervisor", "nlu_editor", "admin"])
    create.add_argument("--skills", default="general", help="comma-separated: cards,loans,accounts,wealth,general")
    create.add_argument("--capacity", type=int, default=3)
    create.add_argument("--no-video", action="store_true", help="not a video agent: never rung for video calls")
    create.add_argument("--password", help="omit to be prompted, or set YUNTING_AGENT_PASSWORD")
    args = parser.parse_args(argv)
    password = args.password or os.environ.get("YUNTING_AGENT_PASSWORD") or getpass.getpass("password: ")
    try:
        return asyncio.run(_create(Settings(), args, password))
    except (Conflict, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
