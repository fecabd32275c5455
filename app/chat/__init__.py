"""The chat domain: rooms, presence, the JSON chat protocol, history, broker."""

from __future__ import annotations

from app.config import Settings

from .accounts import Accounts
from .broker import Broker, LocalBroker
from .directory import Directory
from .search import NoSearch, Search, SQLiteSearch
from .service import ChatService
from .sqlite_accounts import SQLiteAccounts
from .sqlite_directory import SQLiteDirectory
from .sqlite_history import SQLiteHistory
from .store import History

__all__ = ["ChatService", "build_service"]


def build_service(settings: Settings) -> ChatService:
    """The chat service for this process.

    Embedded (no ``CHAT_REDIS_URL``): SQLite history, in-process fan-out.
    With Redis: history in Redis Streams and fan-out, presence, the client
    registry, accounts and the room directory shared with every other process
    through Redis. Nothing connects until :meth:`ChatService.start`.
    """

    def service(
        history: History, broker: Broker, accounts: Accounts, directory: Directory, search: Search
    ) -> ChatService:
        return ChatService(
            history,
            broker,
            accounts=accounts,
            directory=directory,
            search=search,
            max_text=settings.max_text,
            max_rooms=settings.max_rooms,
            message_rate=settings.message_rate,
            message_burst=settings.message_burst,
        )

    if settings.redis_url:
        from .redis_accounts import RedisAccounts
        from .redis_broker import RedisBroker
        from .redis_directory import RedisDirectory
        from .redis_history import RedisHistory
        from .redis_link import RedisLink

        link = RedisLink(settings.redis_url, settings.redis_prefix)
        accounts = Accounts(RedisAccounts(link), guests=settings.guests)
        return service(RedisHistory(link), RedisBroker(link), accounts, RedisDirectory(link), NoSearch())
    history = SQLiteHistory(settings.db, synchronous=settings.db_synchronous)
    accounts = Accounts(SQLiteAccounts(settings.db), guests=settings.guests)
    directory = SQLiteDirectory(settings.db)
    return service(history, LocalBroker(), accounts, directory, SQLiteSearch(settings.db, history.acked_ids))
