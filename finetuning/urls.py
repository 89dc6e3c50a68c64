from django.urls import path

from . import views

app_name = "finetuning"

urlpatterns = [
    path("", views.overview, name="overview"),
    path("runs/new", views.run_create, name="run_create"),
    path("runs/<int:run_id>/", views.run_detail, name="run_detail"),
    path("runs/<int:run_id>.json", views.run_status, name="run_status"),
    path("runs/<int:run_id>/cancel", views.run_cancel, name="run_cancel"),
    path("datasets/new", views.snapshot_create, name="snapshot_create"),
    path("datasets/builds/<int:build_id>.json", views.build_status, name="build_status"),
    path("datasets/<int:snapshot_id>/", views.snapshot_detail, name="snapshot_detail"),
    path("versions/<slug:name>/", views.version_detail, name="version_detail"),
    path("versions/<slug:name>/promote", views.version_promote, name="version_promote"),
    path("rollback", views.version_rollback, name="version_rollback"),
]
