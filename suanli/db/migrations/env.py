"""Alembic environment: runs migrations online against `sqlalchemy.url`."""

from alembic import context

from suanli.db.engine import make_engine
from suanli.db.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
