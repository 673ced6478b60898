"""Uploads: one row per file a user uploaded, so a scan stored without an analysis
(no model yet, analysis service down) still reaches its uploader's history.

Existing scans get one upload row each (their first uploader, name and time).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

NOW = sa.func.current_timestamp()


def upgrade() -> None:
    op.create_table(
        "uploads",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("scan_id", sa.Integer(), nullable=False),
        sa.Column("user", sa.String(255), nullable=False),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=NOW),
        sa.PrimaryKeyConstraint("id", name="pk_uploads"),
        sa.ForeignKeyConstraint(["scan_id"], ["scans.id"], name="fk_uploads_scan_id_scans"),
    )
    op.create_index("ix_uploads_user", "uploads", ["user"])
    op.execute(
        'INSERT INTO uploads (scan_id, "user", filename, created_at) '
        "SELECT id, uploaded_by, filename, created_at FROM scans ORDER BY id"
    )
    _append_only("uploads")


def _append_only(table: str) -> None:
    """The same triggers migration 0001 puts on analyses, feedback and audit_events."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION bcdiag_reject_change()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION bcdiag_reject_change()"
        )
        return
    for operation in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, 'bcdiag: {table} is append-only; "
            f"{operation} rejected'); END"
        )


def downgrade() -> None:
    op.drop_table("uploads")  # dropping a table drops its triggers
