"""``/ws/training/runs/<id>/``: a training run's progress, live, for staff (the run page's socket)."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async

from conversations.sockets import CLOSE_NOT_FOUND, RoleCheckedConsumer

from . import events, selectors
from .models import TrainingRun


class TrainingRunConsumer(RoleCheckedConsumer):
    run_id: int | None = None

    def role_allows(self, user: Any) -> bool:
        return user.is_active and user.is_staff  # the same rule as the /training/ pages

    async def connect(self) -> None:
        if not await self.admit():
            return
        run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        if not await database_sync_to_async(TrainingRun.objects.filter(id=run_id).exists)():
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.run_id = run_id
        await events.run_join(run_id, self.channel_name)  # join first: no change falls between
        await self.accept()
        await self.send_json({"type": "run", "run": await database_sync_to_async(self._payload)()})

    async def disconnect(self, code: int) -> None:
        if self.run_id is not None:
            await events.run_leave(self.run_id, self.channel_name)
            self.run_id = None

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if await self._role_holds(max_age_s=0):
            await self.send_json({"type": "error", "code": "read_only", "detail": "This socket only sends."})

    async def training_run(self, event: dict[str, Any]) -> None:
        if await self._role_holds(max_age_s=self.role_recheck_s):
            await self.send_json(event["payload"])

    def _payload(self) -> dict[str, Any]:
        return selectors.run_payload(TrainingRun.objects.select_related("version").get(id=self.run_id))
