"""The Celery app. Built from settings by a function (no environment read at import time).

``rlhf worker`` builds it and starts a worker; the web app builds one to send task ids.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from kombu import Exchange, Queue

from app.config import Settings
from app.jobs.kinds import QUEUE_DEFAULT, QUEUES, TASK_RUN_JOB


def broker_options(settings: Settings) -> dict[str, Any]:
    if settings.broker_is_embedded:
        folders = {name: settings.broker_dir / name for name in ("queue", "processed", "control")}
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        return {
            "data_folder_in": str(folders["queue"]),
            "data_folder_out": str(folders["queue"]),
            "processed_folder": str(folders["processed"]),
            "control_folder": str(folders["control"]),
            "store_processed": False,
        }
    # Redis/SQS redeliver an unacknowledged message after this long. Training jobs run for
    # hours, so it is long; a redelivered job that is still heartbeating is not run twice.
    return {"visibility_timeout": settings.broker_visibility_timeout_seconds}


def create_celery_app(settings: Settings) -> Celery:
    celery = Celery("rlhf", broker=settings.broker_url, set_as_current=False)
    celery.conf.update(
        broker_transport_options=broker_options(settings),
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE_DEFAULT,
        # One direct exchange per queue: a message sent to `train` reaches only `train`.
        task_queues=[
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES
        ],
        task_default_exchange=QUEUE_DEFAULT,
        task_default_routing_key=QUEUE_DEFAULT,
        task_ignore_result=True,  # job state lives in the jobs table
        task_acks_late=True,  # a worker lost mid-job leaves the message to be redelivered
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,  # jobs are long; do not hoard them
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
    )
    if settings.broker_is_embedded:
        # The filesystem transport has no fanout: no remote control, mingle or gossip.
        celery.conf.worker_enable_remote_control = False

    @celery.task(
        name=TASK_RUN_JOB, bind=True, acks_late=True, reject_on_worker_lost=True, max_retries=None
    )
    def run_job_task(self: Task, job_id: int) -> str:
        from workers.resources import worker_resources
        from workers.runner import JobBusyElsewhere, run_job

        resources = worker_resources()
        try:
            status = run_job(
                job_id=job_id,
                session_factory=resources.session_factory,
                settings=resources.settings,
            )
        except JobBusyElsewhere as busy:
            # Another worker is running it now; look again once its heartbeat could be stale.
            raise self.retry(countdown=busy.retry_after_seconds) from busy
        return status.value

    return celery
