"""The Alembic migrations and the ORM models describe the same schema, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from app.db import Base, make_engine
from app.migrate import downgrade, upgrade
from app.schema import import_all_models
from tests.db_setup import fresh_database


def _diff(engine) -> list:
    import_all_models()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_upgrade_from_empty_matches_models_and_downgrade_to_base_removes_everything(tmp_path):
    with fresh_database(tmp_path, "migrations") as url:
        upgrade(url)
        engine = make_engine(url)
        try:
            tables = set(inspect(engine).get_table_names())
            assert {"users", "api_tokens", "audit_log", "prompts", "rankings"} <= tables
            assert _diff(engine) == [], "models and migrations disagree: run `alembic revision --autogenerate`"

            downgrade(url, "base")
            assert set(inspect(engine).get_table_names()) <= {"alembic_version"}

            upgrade(url)  # and back up again from base
            assert _diff(engine) == []
        finally:
            engine.dispose()


def test_revision_files_are_date_prefixed_and_form_one_line():
    from alembic.script import ScriptDirectory

    from app.migrate import alembic_config

    scripts = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(scripts.get_heads()) == 1, "several heads: chain the new revision after the current head"
    for revision in scripts.walk_revisions():
        filename = revision.path.rsplit("/", 1)[-1]
        assert filename[:11].replace("_", "").isdigit() and filename[4] == "_", filename
