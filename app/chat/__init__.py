"""The chat domain: rooms, presence, the JSON chat protocol, history, broker."""

from __future__ import annotations

from app.config import Settings

from .broker import LocalBroker
from .history import SQLiteHistory
from .service import ChatService

__all__ = ["ChatService", "build_service"]


def build_service(settings: Settings) -> ChatService:
    """The chat service for this process: SQLite history, in-process fan-out."""
    history = SQLiteHistory(settings.db, synchronous=settings.db_synchronous)
    return ChatService(history, LocalBroker(), max_text=settings.max_text)
