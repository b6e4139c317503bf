"""``manage.py make_demo_videos DIR``: synthetic stick-figure videos with labels."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand

from annotator.demo_videos import make_demo_videos


class Command(BaseCommand):
    help = "Write short synthetic videos of stick figures doing known actions."

    def add_arguments(self, parser):
        parser.add_argument("dir", type=Path)
        parser.add_argument("--count", type=int, default=10)
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, dir, count, seed, **options):
        for video in make_demo_videos(dir, count=count, seed=seed):
            parts = ", ".join(f"{lab} {a:.0f}–{b:.0f}s" for a, b, lab in video.segments)
            self.stdout.write(f"{video.path}: {parts}")
