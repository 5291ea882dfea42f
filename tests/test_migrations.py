"""One migration history, which builds exactly the models' schema and can be undone."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from app.cli import alembic_config
from app.db import make_engine
from app.models import Base


def test_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1


def test_migration_files_follow_the_naming_rule() -> None:
    versions = Path(__file__).resolve().parents[1] / "migrations" / "versions"
    names = [p.name for p in versions.glob("*.py")]
    assert names
    for name in names:
        date, _, slug = name.partition("-")
        assert len(date) == len("2026_11_21_0728") and date.replace("_", "").isdigit(), name
        assert slug.endswith(".py")


def _schema_diff(url: str) -> list[object]:
    engine = make_engine(url)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    return list(diff)


def test_upgrade_matches_models_and_downgrade_undoes_it(database_url: str, tmp_path: Path) -> None:
    # The session database was built by `upgrade head`; it must match the models exactly.
    assert _schema_diff(database_url) == []

    scratch = f"sqlite:///{tmp_path / 'scratch.db'}"
    config = alembic_config(scratch)
    command.upgrade(config, "head")
    engine = make_engine(scratch)
    assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
    command.downgrade(config, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    command.upgrade(config, "head")
    assert _schema_diff(scratch) == []
    engine.dispose()
