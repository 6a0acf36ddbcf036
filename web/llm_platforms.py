"""The server's LLM platforms (jobqueue.toml's, via jobqueue/llm/platforms.py) as the API and
the dashboard read them: a config that does not load is a 422 naming the `platform` field,
whichever route needed it (jobs, batches, schedules, campaigns)."""

from __future__ import annotations

from flask import current_app

from jobqueue.llm import platforms
from web.contract import BadRequest


def configured_platforms() -> dict[str, platforms.Platform]:
    """Every configured platform by name, or 422 when the server's config has none usable."""
    try:
        return platforms.load(current_app.config.get("JOBQUEUE_CONFIG"))
    except platforms.ConfigError as exc:
        raise BadRequest(f"platform: the server has no usable platform config ({exc})",
                         field="platform", status=422) from None


def fire_platforms(schedule: dict) -> dict[str, platforms.Platform] | None:
    """The platforms a run of `schedule` needs: the server's for a batch or a campaign (a
    422 when they do not load), None for a job (whose target holds its queue already)."""
    return configured_platforms() if schedule["target"]["type"] in ("batch", "campaign") else None
