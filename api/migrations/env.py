"""Alembic environment: one metadata (all SQLModel tables); PostgreSQL migrations run under an advisory lock
so several API workers starting at once don't race."""

from alembic import context
from sqlalchemy import create_engine, pool, text
from sqlmodel import SQLModel

import api.models  # noqa: F401  (registers every table)

config = context.config
target_metadata = SQLModel.metadata
MIGRATION_LOCK_ID = 7_202_611


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("alembic: sqlalchemy.url is not set (api.db.alembic_config sets it)")
    engine = create_engine(url, poolclass=pool.NullPool, hide_parameters=True)
    with engine.connect() as connection:
        is_pg = connection.dialect.name == "postgresql"
        if is_pg:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                render_as_batch=connection.dialect.name == "sqlite",
            )
            with context.begin_transaction():
                context.run_migrations()
        finally:
            if is_pg:
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
                connection.commit()


run_migrations_online()
