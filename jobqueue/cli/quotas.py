"""`jobqueue quotas set|list|remove|apply|usage`: per-owner quotas on new work, stored in
Postgres (jobqueue/quotas.py)."""

from __future__ import annotations

import click

from jobqueue.cli.common import UserError, connection, duration, lines, print_rows


@click.group("quotas")
def quotas_group() -> None:
    """Per-owner quotas: N jobs (and T estimated LLM tokens) per period, per queue or kind."""


def _key(text: str) -> tuple[str, str]:
    from jobqueue import quotas

    try:
        return quotas.parse_key(text)
    except ValueError as exc:
        raise UserError(str(exc)) from None


@quotas_group.command("set")
@click.argument("target", metavar="queue:NAME|kind:NAME")
@click.argument("jobs", required=False, metavar="[N/PERIOD]")
@click.option("--tokens", default=None, metavar="N/PERIOD",
              help="Estimated LLM tokens per owner per period, e.g. 200000/hour.")
def quotas_set(target: str, jobs: str | None, tokens: str | None) -> None:
    """Set a quota, e.g. `jobqueue quotas set kind:lesson 10/min` (per owner; applies at
    once, in every process)."""
    from jobqueue import quotas

    scope, name = _key(target)
    try:
        quota = quotas.Quota(scope, name,
                             jobs=quotas.parse_rate(jobs, "jobs") if jobs else None,
                             tokens=quotas.parse_rate(tokens, "--tokens") if tokens else None)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    with connection() as conn:
        quotas.store(conn, quota)
    click.echo(f"quota {quota.key}: " + ", ".join(
        f"{rate} {what}" for rate, what in ((quota.jobs, "jobs"), (quota.tokens, "tokens"))
        if rate) + " per owner")


@quotas_group.command("list")
@click.option("--json", "as_json", is_flag=True)
def quotas_list(as_json: bool) -> None:
    """Every quota, and where it was set (config: jobqueue.toml; api: CLI or HTTP)."""
    from jobqueue import quotas

    with connection() as conn:
        rows = quotas.listed(conn)
    print_rows(rows, as_json, "(no quotas)", lines(
        lambda r: f"{r['scope']}:{r['name']}  jobs {r['jobs'] or '-'}  tokens "
                  f"{r['tokens'] or '-'}  ({r['source']})"))


@quotas_group.command("remove")
@click.argument("target", metavar="queue:NAME|kind:NAME")
def quotas_remove(target: str) -> None:
    """Remove a quota (and every owner's use of it)."""
    from jobqueue import quotas

    scope, name = _key(target)
    with connection() as conn:
        if not quotas.remove(conn, scope, name):
            raise UserError(f"quota {target}: not found (see `jobqueue quotas list`)")
    click.echo(f"removed quota {target}")


@quotas_group.command("apply")
def quotas_apply() -> None:
    """Make the quotas from jobqueue.toml's [quotas] those in the database (as `jobqueue
    migrate` does); quotas set with the CLI or API stay."""
    from jobqueue import quotas

    wanted = quotas.load()
    with connection() as conn:
        done = quotas.apply_config(conn, wanted)
    click.echo(f"{len(done['set'])} quota(s) set from the config"
               + (f"; removed {', '.join(done['removed'])}" if done["removed"] else ""))


@quotas_group.command("usage")
@click.argument("owner")
@click.option("--json", "as_json", is_flag=True)
def quotas_usage(owner: str, as_json: bool) -> None:
    """An owner's standing: what is left of each quota it used lately, and when it is full."""
    from jobqueue import quotas

    with connection() as conn:
        rows = quotas.usage(conn, owner)
    print_rows(rows, as_json, f"{owner}: no quota used lately (every budget full)", lines(
        lambda r: f"{r['quota']} {r['budget']}: {r['remaining']} of {r['per']} left, full in "
                  f"{duration(r['reset_seconds'])}"))
