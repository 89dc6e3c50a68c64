from django.contrib import admin
from django.contrib.auth.views import LogoutView
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path

from conversations import views

urlpatterns = [
    path("", views.chat_page, name="chat"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/login/", views.ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", LogoutView.as_view(), name="logout"),
    path("agent/", views.inbox, name="agent-inbox"),
    path("agent/export.jsonl", views.export, {"fmt": "jsonl"}, name="agent-export-jsonl"),
    path("agent/export.csv", views.export, {"fmt": "csv"}, name="agent-export-csv"),
    path("agent/conversations/<uuid:conversation_id>/", views.transcript, name="agent-transcript"),
    path("agent/conversations/<uuid:conversation_id>/review", views.conversation_review, name="agent-review"),
    path("agent/messages/<int:message_id>/feedback", views.message_feedback, name="agent-feedback"),
    path("agent/messages/<int:message_id>/correction", views.message_correction, name="agent-correction"),
    path("agent/customers/<uuid:customer_id>/erase", views.customer_erase, name="agent-customer-erase"),
    path("training/", include("finetuning.urls")),
    path("admin/", admin.site.urls),
    # daphne serves no static files of its own; for one self-hosted machine Django serving them
    # is enough (put a proxy or CDN in front for more).
    re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True}),
]
