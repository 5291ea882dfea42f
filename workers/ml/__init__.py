"""Pure machine-learning code of the InstructGPT loop (no database, no Celery).

Kept apart from the job plumbing so that it can be tested, benchmarked and reused (by the
generation, SFT, RM and PPO jobs) with nothing but ``torch`` and ``transformers``.
"""
