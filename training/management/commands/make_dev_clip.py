"""``manage.py make_dev_clip DIR [--size tiny|base]``: a random-weight CLIP folder."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand

from training.ml.devclip import make_dev_clip


class Command(BaseCommand):
    help = (
        "Write an HF-format CLIP with random weights and the real CLIP tokenizer, "
        "for tests and the offline demo (tiny) or benchmarks (base = ViT-B/32)."
    )

    def add_arguments(self, parser):
        parser.add_argument("dir", type=Path)
        parser.add_argument("--size", choices=["tiny", "base"], default="tiny")
        parser.add_argument("--seed", type=int, default=0)

    def handle(self, *args, dir, size, seed, **options):
        path = make_dev_clip(dir, size=size, seed=seed)
        self.stdout.write(f"Wrote a random-weight {size} CLIP to {path}")
