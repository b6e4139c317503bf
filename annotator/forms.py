"""Forms for labels and projects."""

from __future__ import annotations

import re

from django import forms

from annotator.models import ActionLabel, Project

_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


class LabelForm(forms.ModelForm):
    class Meta:
        model = ActionLabel
        fields = ["name", "prompt", "color", "hotkey"]
        widgets = {"color": forms.TextInput(attrs={"type": "color"})}

    def __init__(self, *args, project: Project, **kwargs):
        super().__init__(*args, **kwargs)
        self.project = project
        self.instance.project = project

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        clash = self.project.labels.filter(name__iexact=name).exclude(
            pk=self.instance.pk
        )
        if clash.exists():
            raise forms.ValidationError(f"A label named “{name}” already exists.")
        return name

    def clean_color(self) -> str:
        color = self.cleaned_data["color"]
        if not _HEX.match(color):
            raise forms.ValidationError("Colour must look like #1f77b4.")
        return color.lower()

    def clean_hotkey(self) -> str:
        key = self.cleaned_data["hotkey"].strip().lower()
        if key and (key in "0123456789[]usx" or not key.isalnum()):
            raise forms.ValidationError(
                "Hotkey must be a letter other than U, S and X (those are "
                "review shortcuts)."
            )
        if key:
            labels = self.project.labels.exclude(pk=self.instance.pk)
            clash = labels.filter(hotkey=key).first()
            if clash is not None:
                raise forms.ValidationError(f"“{key}” is already used by {clash}.")
        return key
