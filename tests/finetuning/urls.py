"""The project's URLs plus the training pages, as chatbot/urls.py will include them."""

from django.urls import include, path

from chatbot.urls import urlpatterns as project

urlpatterns = [*project, path("training/", include("finetuning.urls"))]
