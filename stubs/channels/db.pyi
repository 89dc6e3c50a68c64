from typing import ParamSpec, TypeVar

from asgiref.sync import SyncToAsync

_P = ParamSpec("_P")
_R = TypeVar("_R")

# asgiref's SyncToAsync, closing stale database connections around the call: the same signature.
class DatabaseSyncToAsync(SyncToAsync[_P, _R]): ...

database_sync_to_async = DatabaseSyncToAsync

async def aclose_old_connections() -> None: ...
