"""Page routes for model versions and training runs."""

from __future__ import annotations

urlpatterns: list = []
