from collections.abc import Sequence
from typing import Any

from asgiref.typing import ASGIReceiveCallable, ASGISendCallable, Scope

class OriginValidator:
    def __init__(self, application: Any, allowed_origins: Sequence[str]) -> None: ...
    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable) -> None: ...

def AllowedHostsOriginValidator(application: Any) -> OriginValidator: ...
