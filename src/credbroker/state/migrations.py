"""Schema migrations as frozen text, shared by the SQLite and PostgreSQL state stores.

Each store lists its migrations as literal SQL, numbered from 1, and applies the ones a database
has not seen yet, in order, each exactly once. A migration that shipped is never edited (a
database that already ran it would never see the change): a change to the schema is a new
migration at the end of the list. tests/contract/test_state_migrations.py holds a fingerprint of
every shipped migration and fails if one changes, and checks that the migrations create exactly
the columns the record mapping (state/records.py) reads and writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    version: int  # 1, 2, ...: its place in the list, recorded in the database once applied
    summary: str
    statements: tuple[str, ...]  # run in order, in the same transaction as the version record


def checked(migrations: Sequence[Migration]) -> tuple[Migration, ...]:
    """The migrations as given, if they are numbered 1, 2, ... without a gap; else ValueError."""
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(
                f"migration {migration.version} ({migration.summary}) is at position {expected}"
            )
        if not migration.statements:
            raise ValueError(f"migration {migration.version} has no statement")
    return tuple(migrations)
