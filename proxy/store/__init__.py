"""Storage: SQLAlchemy 2 async over SQLite (aiosqlite) or PostgreSQL (asyncpg)."""

from proxy.store.engine import create_engine, migrate, open_store
from proxy.store.queries import Store

__all__ = ["Store", "create_engine", "migrate", "open_store"]
