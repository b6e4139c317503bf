"""HARweb: label human actions in video with CLIP proposals and active learning."""

from harweb.celery import app as celery_app

__all__ = ("celery_app",)
