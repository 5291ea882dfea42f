"""Job kinds and the Celery queue each runs on. The web process needs only these names;
the code that runs a kind lives in ``workers/`` (heavy imports stay out of the web app)."""

from __future__ import annotations

import re
from typing import Final

QUEUE_DEFAULT: Final = "default"
QUEUE_TRAIN: Final = "train"
QUEUES: Final = (QUEUE_DEFAULT, QUEUE_TRAIN)
#: a training machine's own queue (one worker per machine: design §12) is named ``train-...``
TRAIN_QUEUE_PREFIX: Final = "train-"
_QUEUE_NAME: Final = re.compile(r"^train-[A-Za-z0-9][A-Za-z0-9._-]{0,60}$")


def is_queue(name: str) -> bool:
    """A queue a worker may listen on and a training job may be sent to."""
    return name in QUEUES or bool(_QUEUE_NAME.match(name))


SELFCHECK: Final = "selfcheck"
GENERATE: Final = "generate"
EXPORT: Final = "export"
TRAIN_SFT: Final = "train_sft"
TRAIN_RM: Final = "train_rm"
TRAIN_DPO: Final = "train_dpo"
TRAIN_PPO: Final = "train_ppo"
SCORE: Final = "score"  # a reward model's score of every answer (rlhf score)
JUDGE: Final = "judge"  # an AI judge's rankings (rlhf judge)

QUEUE_BY_KIND: Final[dict[str, str]] = {
    SELFCHECK: QUEUE_DEFAULT,
    GENERATE: QUEUE_TRAIN,  # needs the model (and an accelerator, where there is one)
    EXPORT: QUEUE_DEFAULT,
    TRAIN_SFT: QUEUE_TRAIN,
    TRAIN_RM: QUEUE_TRAIN,
    TRAIN_DPO: QUEUE_TRAIN,
    TRAIN_PPO: QUEUE_TRAIN,
    SCORE: QUEUE_TRAIN,  # loads a reward model
    JUDGE: QUEUE_TRAIN,  # loads a reward model, or waits on an endpoint for a long time
}

# The one Celery task; its argument is a jobs.id, the row says what to do.
TASK_RUN_JOB: Final = "rlhf.run_job"
