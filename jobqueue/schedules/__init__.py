"""Recurring work: schedules stored in Postgres, each fire enqueued exactly once.

cron.py evaluates expressions in a time zone; spec.py says what a valid schedule is; store.py
reads and changes them; declared.py reads `[schedules.NAME]` and `@task(cron=...)` and syncs
them at a worker's start; tick.py decides due fires and enqueues them. The worker runs the
tick (jobqueue/worker/scheduler.py).
"""
