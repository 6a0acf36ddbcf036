"""`jobqueue keys list|enable|disable`: the platforms' API keys as the shared limiter sees them.

A key is named by its id (`VAR:hash`, as in logs and `status`) or by its variable's name. The
secret itself never appears: only the environment of the workers holds it. Enabling a key
that a 401/403 or `insufficient_quota` disabled takes effect in every running worker at its
next reservation (and reopens claiming on a platform that had no usable key), no restart.
"""

from __future__ import annotations

import click

from jobqueue.cli.common import (
    Column,
    UserError,
    connection,
    open_client,
    print_rows,
    state_colour,
    table,
)


@click.group()
def keys() -> None:
    """Platform API keys: which are usable, and turning them back on."""


@keys.command("list")
@click.option("--platform", default=None, help="Only this platform.")
@click.option("--json", "as_json", is_flag=True)
def keys_list(platform, as_json) -> None:
    """Each key per platform and model: ok, blocked (a 429's wait) or disabled (why), and its
    totals."""
    with open_client() as jq:
        rows = jq.rate_limits(platform)
    print_rows(rows, as_json,
               "no keys yet: a platform's keys appear once a worker has started on it",
               _keys_table)


def _keys_table(rows: list[dict]) -> str:
    from jobqueue.llm.ratelimit import key_state

    for r in rows:
        r["state"] = key_state(r)
        r["idle_seconds"] = max(0.0, r.get("idle_seconds") or 0.0)
    return table(rows, [
        Column("platform", "PLATFORM", "text"), Column("model", "MODEL", "text"),
        Column("key_id", "KEY", "text"), Column("requests_total", "REQUESTS"),
        Column("throttled_total", "429S"), Column("idle_seconds", "LAST USED", "duration"),
        Column("state", "STATE", "text", state_colour)])


def _set(name: str, platform: str | None, reason: str | None) -> list[dict]:
    from jobqueue.llm.ratelimit import set_key_disabled

    with connection() as conn:
        rows = set_key_disabled(conn, name, platform, reason)
    if not rows:
        raise UserError(f"key {name}: no such key" + (f" on platform {platform}" if platform
                                                      else "") + " (see `jobqueue keys list`)")
    return rows


@keys.command("enable")
@click.argument("name")
@click.option("--platform", default=None, help="Only on this platform.")
def keys_enable(name, platform) -> None:
    """Use key NAME again (after fixing or topping it up); running workers pick it up."""
    rows = _set(name, platform, None)
    for key_id in sorted({r["key_id"] for r in rows}):
        click.echo(f"enabled {key_id}")


@keys.command("disable")
@click.argument("name")
@click.option("--platform", default=None, help="Only on this platform.")
@click.option("--reason", default="disabled by an operator", show_default=True)
def keys_disable(name, platform, reason) -> None:
    """Stop using key NAME in every worker (its jobs go to the platform's other keys)."""
    rows = _set(name, platform, reason)
    for key_id in sorted({r["key_id"] for r in rows}):
        click.echo(f"disabled {key_id}")
