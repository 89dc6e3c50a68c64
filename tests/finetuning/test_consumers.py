"""The run page's socket over the real application and the real Redis channel layer."""

from __future__ import annotations

from typing import Any

import pytest
from channels.db import database_sync_to_async

from finetuning import events, services
from finetuning.models import TrainingRun
from tests.sockets import receive_until, socket_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("clean_redis")]


@database_sync_to_async
def queued_run() -> TrainingRun:
    return services.run_start()


@database_sync_to_async
def record_progress(run: TrainingRun, step: int, loss: float) -> None:
    """What the training worker does after a step: store it (under its lease), which pushes it."""
    services.run_claim(run_id=run.id, owner="w1")
    services.run_update(
        run=run, owner="w1", step=step, total_steps=10, loss_history=[[step, loss]], tokens_per_s=150.0, eta_s=9.0
    )


async def test_staff_get_the_run_then_every_change_live(admin_user: Any) -> None:
    run = await queued_run()
    socket = await socket_for(f"/ws/training/runs/{run.id}/", user=admin_user)
    connected, _ = await socket.connect()
    assert connected
    first = await socket.receive_json_from(timeout=5)
    assert first["type"] == "run" and first["run"]["id"] == run.id and first["run"]["status"] == "queued"

    await record_progress(run, 3, 1.25)
    frames = await receive_until(socket, lambda f: f["run"]["step"] == 3)
    pushed = frames[-1]["run"]
    assert pushed["status"] == "running" and pushed["progress"] == 0.3
    assert pushed["loss_history"] == [[3, 1.25]] and pushed["eta_s"] == 9.0

    await database_sync_to_async(services.run_cancel)(run=run)
    frames = await receive_until(socket, lambda f: f["run"]["cancel_requested"])
    assert frames[-1]["run"]["status"] == "running"  # a running run stops at its next check

    await socket.send_json_to({"type": "cancel"})
    assert (await socket.receive_json_from(timeout=5))["code"] == "read_only"
    await socket.disconnect()


@pytest.mark.parametrize("who, code", [("nobody", 4401), ("agent", 4403)])
async def test_only_staff_may_watch_a_run(who: str, code: int, agent_user: Any) -> None:
    """Agents review transcripts; training is for staff, on the socket as on the /training/ pages."""
    run = await queued_run()
    user = None if who == "nobody" else agent_user
    socket = await socket_for(f"/ws/training/runs/{run.id}/", user=user)
    connected, close_code = await socket.connect()
    assert not connected and close_code == code


async def test_staff_who_lose_the_role_hear_nothing_more(admin_user: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from finetuning.consumers import TrainingRunConsumer

    monkeypatch.setattr(TrainingRunConsumer, "role_recheck_s", 0.0)  # every push asks (default: every 5 s)
    run = await queued_run()
    socket = await socket_for(f"/ws/training/runs/{run.id}/", user=admin_user)
    assert (await socket.connect())[0]
    await socket.receive_json_from(timeout=5)
    admin_user.is_staff = False
    await database_sync_to_async(admin_user.save)()
    await record_progress(run, 2, 1.5)
    closed = await socket.receive_output(timeout=5)
    assert closed == {"type": "websocket.close", "code": 4403}
    await socket.disconnect()


async def test_an_unknown_run_is_refused(admin_user: Any) -> None:
    socket = await socket_for("/ws/training/runs/999999/", user=admin_user)
    connected, close_code = await socket.connect()
    assert not connected and close_code == 4404


def test_a_push_with_no_channel_layer_never_touches_the_run(db: Any, settings: Any, caplog: Any) -> None:
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "no.such.Layer"}}
    run = services.run_start()
    events.run_changed(run.id)
    assert "could not push the progress of run" in caplog.text
    assert TrainingRun.objects.get(id=run.id).status == "queued"
