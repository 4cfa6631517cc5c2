"""Alembic migrations, shipped in the wheel so a plain install can migrate."""
