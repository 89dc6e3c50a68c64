"""Staff pages for the learning loop. No torch here: everything heavy happens on the Celery queue."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.admin.views.decorators import staff_member_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_GET, require_POST

from . import conf, selectors, services, tasks
from .models import DatasetBuild, DatasetSnapshot, ModelVersion, TrainingRun


@staff_member_required
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    context = {
        "runs": [
            {"run": run, "phase_text": selectors.run_phase_text(run), "live": run.status in TrainingRun.ACTIVE_STATUSES}
            for run in TrainingRun.objects.select_related("version", "snapshot")[:30]
        ],
        "versions": ModelVersion.objects.all()[:30],
        "snapshots": DatasetSnapshot.objects.all()[:10],
        "active": selectors.version_active(),
        "busy": TrainingRun.objects.filter(status__in=TrainingRun.ACTIVE_STATUSES).first(),
        "rollback": selectors.rollback_target(),
    }
    build = selectors.build_latest()
    if build is not None:
        context["build"] = selectors.build_payload(build)
    return render(request, "finetuning/overview.html", context)


@staff_member_required
@require_POST
def run_create(request: HttpRequest) -> HttpResponse:
    snapshot = None
    if request.POST.get("snapshot"):
        snapshot = get_object_or_404(DatasetSnapshot, id=request.POST["snapshot"])
    try:
        run = services.run_start(
            requested_by=request.user, snapshot=snapshot, enqueue=tasks.training_run.delay_on_commit
        )
    except services.RunAlreadyActive as busy:
        messages.warning(request, str(busy))
        run = busy.run
    return redirect("finetuning:run_detail", run_id=run.id)


@staff_member_required
@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun.objects.select_related("version", "snapshot"), id=run_id)
    return render(request, "finetuning/run.html", {"run": run, "payload": selectors.run_payload(run)})


@staff_member_required
@require_GET
def run_status(request: HttpRequest, run_id: int) -> JsonResponse:
    run = get_object_or_404(TrainingRun.objects.select_related("version"), id=run_id)
    return JsonResponse(selectors.run_payload(run))


@staff_member_required
@require_POST
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = get_object_or_404(TrainingRun, id=run_id)
    services.run_cancel(run=run)
    return redirect("finetuning:run_detail", run_id=run.id)


@staff_member_required
@require_POST
def snapshot_create(request: HttpRequest) -> HttpResponse:
    try:
        services.build_start(requested_by=request.user, enqueue=tasks.dataset_build.delay_on_commit)
    except services.BuildAlreadyActive as busy:
        messages.warning(request, str(busy).capitalize() + ".")
    return redirect("finetuning:overview")


@staff_member_required
@require_GET
def build_status(request: HttpRequest, build_id: int) -> JsonResponse:
    build = get_object_or_404(DatasetBuild.objects.select_related("snapshot"), id=build_id)
    return JsonResponse(selectors.build_payload(build))


@staff_member_required
@require_GET
def snapshot_detail(request: HttpRequest, snapshot_id: int) -> HttpResponse:
    snapshot = get_object_or_404(DatasetSnapshot, id=snapshot_id)
    examples = snapshot.examples.all()
    if request.GET.get("source"):
        examples = examples.filter(source=request.GET["source"])
    page = Paginator(examples, 25).get_page(request.GET.get("page"))
    return render(request, "finetuning/snapshot.html", {"snapshot": snapshot, "page": page})


@staff_member_required
@require_GET
def version_detail(request: HttpRequest, name: str) -> HttpResponse:
    version = get_object_or_404(ModelVersion.objects.select_related("snapshot"), name=name)
    context = {
        "version": version,
        "metrics": version.metrics,
        "live": selectors.version_live_results(version),
        "active": selectors.version_active(),
        "rollback": selectors.rollback_target(),
        "refused": services.version_refused_checks(version),
        "checks": selectors.version_checks(version),
        "min_examples": conf.check_min_examples(),
    }
    return render(request, "finetuning/version.html", context)


@staff_member_required
@require_POST
def version_promote(request: HttpRequest, name: str) -> HttpResponse:
    version = get_object_or_404(ModelVersion, name=name)
    try:
        services.version_promote(
            version=version,
            expected=_expected(request),
            actor=request.user,
            force=request.POST.get("force") == "yes",
            reason=request.POST.get("reason", ""),
        )
        messages.success(request, f"{version.name} now answers new messages.")
    except services.LearningLoopError as error:
        messages.error(request, str(error))
    return redirect("finetuning:version_detail", name=version.name)


@staff_member_required
@require_POST
def version_rollback(request: HttpRequest) -> HttpResponse:
    try:
        previous = services.version_rollback(expected=_expected(request), actor=request.user)
        messages.success(request, f"Rolled back: {previous.name if previous else 'the base model'} is serving.")
    except services.LearningLoopError as error:
        messages.error(request, str(error))
    return redirect("finetuning:overview")


def _expected(request: HttpRequest) -> str | None:
    """The version serving when the page was drawn (the pages always send it): a second click, or
    a page older than someone else's promote, then changes nothing."""
    return request.POST.get("expected", "").strip() or None
