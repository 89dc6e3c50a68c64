from collections.abc import Callable
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])

class Signal:
    def connect(self, receiver: _F, **kwargs: Any) -> _F: ...

worker_ready: Signal
worker_shutdown: Signal
worker_init: Signal
worker_process_init: Signal
