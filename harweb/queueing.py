"""Queue Celery tasks after the transaction commits, without failing requests.

If the broker is down the row keeps its QUEUED status and the periodic sweeper
(``annotator.tasks.requeue_stale``) sends it again later: nothing is lost.
"""

from __future__ import annotations

import logging
from functools import partial

from django.db import transaction

log = logging.getLogger(__name__)


def _send(task, args: tuple) -> None:
    try:
        task.apply_async(args=args, retry=True)
    except Exception as exc:  # the broker is down: the sweeper retries later
        log.warning("Could not queue %s%r: %s", task.name, args, exc)


def enqueue(task, *args) -> None:
    """Like ``task.delay_on_commit`` but a broker outage only logs."""
    transaction.on_commit(partial(_send, task, args), robust=True)
