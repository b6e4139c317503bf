"""HARweb: label human actions in video with CLIP proposals and active learning."""

# First, before anything loads numpy or torch: their thread defaults.
import training.ml  # noqa: F401, I001
from harweb.celery import app as celery_app

__all__ = ("celery_app",)
