# Stubs for the parts of Celery 5 this project calls: Celery ships no types. A task keeps the
# signature of the function it wraps, less the bound ``self`` (``bind=True``).
from collections.abc import Callable
from typing import Any, Concatenate, Generic, Literal, ParamSpec, TypeVar, overload

_P = ParamSpec("_P")
_R = TypeVar("_R")

class AsyncResult:
    id: str

class Request:
    id: str
    retries: int

class Task(Generic[_P, _R]):
    request: Request
    def __call__(self, *args: _P.args, **kwargs: _P.kwargs) -> _R: ...
    def delay(self, *args: _P.args, **kwargs: _P.kwargs) -> AsyncResult: ...
    def delay_on_commit(self, *args: _P.args, **kwargs: _P.kwargs) -> None: ...
    def apply_async(
        self, args: tuple[Any, ...] | None = ..., kwargs: dict[str, Any] | None = ..., **options: Any
    ) -> AsyncResult: ...
    def retry(self, *, countdown: float | None = ..., exc: BaseException | None = ..., **options: Any) -> Exception: ...

@overload
def shared_task(
    *, bind: Literal[True], **options: Any
) -> Callable[[Callable[Concatenate[Any, _P], _R]], Task[_P, _R]]: ...
@overload
def shared_task(*, bind: Literal[False] = ..., **options: Any) -> Callable[[Callable[_P, _R]], Task[_P, _R]]: ...

class Celery:
    def __init__(self, main: str | None = ..., **kwargs: Any) -> None: ...
    def config_from_object(self, obj: object, namespace: str | None = ...) -> None: ...
    def autodiscover_tasks(self, packages: Any = ..., **kwargs: Any) -> None: ...
    conf: Any
