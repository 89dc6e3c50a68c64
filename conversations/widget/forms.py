"""The staff form for a widget site; origins are typed one a line and stored normalised."""

from __future__ import annotations

from typing import Any

from django import forms

from ..models import WidgetSite
from .origins import InvalidOrigin, origins_parse


class WidgetSiteForm(forms.ModelForm):  # type: ignore[type-arg]
    origins = forms.CharField(
        label="Allowed origins",
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "autocapitalize": "off"}),
        help_text="One a line, like https://shop.example.com (scheme, host and port if not the default). "
        "Only pages on these origins can show the widget.",
    )

    class Meta:
        model = WidgetSite
        fields = ["name", "title", "greeting", "brand_colour", "position", "prechat", "suggestions"]
        widgets = {"brand_colour": forms.TextInput(attrs={"type": "color"})}
        help_texts = {
            "title": "The chat's heading.",
            "greeting": "The first line the customer sees, before they type.",
            "brand_colour": "The launcher's and the chat's accent colour, like #2563eb.",
            "suggestions": "Offer the most asked approved knowledge questions as buttons.",
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk and not self.is_bound:
            self.fields["origins"].initial = "\n".join(self.instance.allowed_origins)

    def clean_origins(self) -> list[str]:
        try:
            return origins_parse(self.cleaned_data.get("origins") or "")
        except InvalidOrigin as error:
            raise forms.ValidationError(str(error)) from None

    def clean_brand_colour(self) -> str:
        return str(self.cleaned_data["brand_colour"]).lower()

    def save(self, commit: bool = True) -> WidgetSite:
        site: WidgetSite = super().save(commit=False)
        site.allowed_origins = self.cleaned_data["origins"]
        if commit:
            site.save()
        return site
