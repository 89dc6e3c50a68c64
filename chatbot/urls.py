from django.contrib import admin
from django.contrib.auth.views import LogoutView
from django.contrib.staticfiles.views import serve as serve_static
from django.urls import include, path, re_path

from conversations import views
from conversations.chat import views as chat
from conversations.knowledge import views as knowledge
from conversations.reports import views as reports
from conversations.widget import views as widget
from conversations.workspace import thread_views
from conversations.workspace import views as workspace

urlpatterns = [
    path("", chat.chat_page, name="chat"),
    path("healthz", views.healthz, name="healthz"),
    path("widget.js", widget.loader, name="widget-loader"),
    path("widget/<slug:key>/frame", widget.frame, name="widget-frame"),
    path("widget/<slug:key>/config", widget.config, name="widget-config"),
    path("widget/<slug:key>/session", widget.session, name="widget-session"),
    path("accounts/login/", views.ThrottledLoginView.as_view(), name="login"),
    path("accounts/logout/", LogoutView.as_view(), name="logout"),
    path("agent/", workspace.inbox, name="agent-inbox"),
    path("agent/export.jsonl", workspace.export, {"fmt": "jsonl"}, name="agent-export-jsonl"),
    path("agent/export.csv", workspace.export, {"fmt": "csv"}, name="agent-export-csv"),
    path("agent/conversations/<uuid:conversation_id>/", workspace.transcript, name="agent-transcript"),
    path("agent/conversations/<uuid:conversation_id>/review", workspace.conversation_review, name="agent-review"),
    path("agent/conversations/<uuid:conversation_id>/assign", workspace.conversation_assign, name="agent-assign"),
    path("agent/inbox/counts", workspace.inbox_counts, name="agent-inbox-counts"),
    path("agent/bulk", workspace.conversations_bulk, name="agent-bulk"),
    path("agent/messages/<int:message_id>/feedback", workspace.message_feedback, name="agent-feedback"),
    path("agent/messages/<int:message_id>/correction", workspace.message_correction, name="agent-correction"),
    path("agent/customers/<uuid:customer_id>/erase", workspace.customer_erase, name="agent-customer-erase"),
    path("agent/customers/<uuid:customer_id>/sign-out", widget.customer_sign_out, name="agent-customer-sign-out"),
    path("agent/conversations/<uuid:conversation_id>/notes", thread_views.notes, name="agent-notes"),
    path("agent/canned/", thread_views.canned_list, name="agent-canned"),
    path("agent/canned/<int:reply_id>/edit", thread_views.canned_edit, name="agent-canned-edit"),
    path("agent/canned/<int:reply_id>/delete", thread_views.canned_delete, name="agent-canned-delete"),
    path("agent/snippets.json", thread_views.snippets, name="agent-snippets"),
    path("agent/knowledge/", knowledge.knowledge_page, name="agent-knowledge"),
    path("agent/knowledge/approve", knowledge.entries_approve, name="agent-knowledge-approve"),
    path("agent/knowledge/merge", knowledge.entries_merge, name="agent-knowledge-merge"),
    path("agent/knowledge/create", knowledge.entry_create, name="agent-knowledge-create"),
    path("agent/knowledge/import", knowledge.entries_import, name="agent-knowledge-import"),
    path("agent/knowledge/export.jsonl", knowledge.entries_export, {"fmt": "jsonl"}, name="agent-knowledge-jsonl"),
    path("agent/knowledge/export.csv", knowledge.entries_export, {"fmt": "csv"}, name="agent-knowledge-csv"),
    path("agent/knowledge/<int:entry_id>/edit", knowledge.entry_edit, name="agent-knowledge-edit"),
    path("agent/knowledge/<int:entry_id>/retire", knowledge.entry_retire, name="agent-knowledge-retire"),
    path("agent/widget/", widget.site_list, name="agent-widget"),
    path("agent/widget/new", widget.site_create, name="agent-widget-new"),
    path("agent/widget/<int:site_id>/", widget.site_detail, name="agent-widget-site"),
    path("agent/widget/<int:site_id>/secret", widget.site_secret, name="agent-widget-secret"),
    path("agent/widget/<int:site_id>/delete", widget.site_delete, name="agent-widget-delete"),
    path("agent/widget/<int:site_id>/preview", widget.site_preview, name="agent-widget-preview"),
    path("reports/", reports.reports_page, name="reports"),
    path("reports/export.csv", reports.reports_csv, name="reports-csv"),
    path("training/", include("finetuning.urls")),
    path("admin/", admin.site.urls),
    # The ASGI server (uvicorn) serves no static files of its own; for one self-hosted machine Django serving them
    # is enough (put a proxy or CDN in front for more).
    re_path(r"^static/(?P<path>.*)$", serve_static, {"insecure": True}),
]
