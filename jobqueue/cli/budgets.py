"""`jobqueue budgets set|list|remove`: USD budgets for LLM work per owner, batch or campaign.

At a budget, the scope's remaining LLM jobs pause (they wait, attempts untouched, saying
"over budget"); raising or removing it resumes them at once (jobqueue/llm/costs.py).
"""

from __future__ import annotations

import click

from jobqueue.cli.common import UserError, connection, lines, print_rows
from jobqueue.errors import InvalidJob
from jobqueue.llm import costs

SCOPE = click.Choice(costs.SCOPES)
PERIOD = click.Choice(costs.PERIODS)


@click.group()
def budgets() -> None:
    """USD budgets for LLM calls: per owner, batch or campaign; per day, month or total."""


@budgets.command("set")
@click.argument("scope", type=SCOPE)
@click.argument("scope_id", metavar="ID")
@click.argument("usd", type=float)
@click.option("--per", "period", type=PERIOD, default="total", show_default=True,
              help="The period the budget covers (UTC days and calendar months).")
def budgets_set(scope, scope_id, usd, period) -> None:
    """Allow SCOPE ID (an owner's name, a batch id) USD per period; resumes paused jobs."""
    with connection() as conn:
        try:
            budget = costs.set_budget(conn, scope, scope_id, period, usd)
        except InvalidJob as exc:
            raise UserError(str(exc)) from None
    click.echo(f"{scope} {scope_id}: ${budget['limit_usd']:,.4f} per {period} "
               f"(${budget['spent_usd']:,.4f} spent); {budget['resumed']} paused job(s) "
               "resumed")


@budgets.command("list")
@click.option("--scope", type=SCOPE, default=None)
@click.option("--json", "as_json", is_flag=True)
def budgets_list(scope, as_json) -> None:
    """Every budget with what its period has spent."""
    with connection() as conn:
        rows = costs.list_budgets(conn, scope)
    print_rows(rows, as_json, "no budgets", lines(
        lambda b: f"{b['scope']} {b['id']}  per {b['period']}  ${b['spent_usd']:,.4f} of "
                  f"${b['limit_usd']:,.4f} spent  (${b['remaining_usd']:,.4f} left)"))


@budgets.command("remove")
@click.argument("scope", type=SCOPE)
@click.argument("scope_id", metavar="ID")
@click.option("--per", "period", type=PERIOD, default=None, help="Only this period's.")
def budgets_remove(scope, scope_id, period) -> None:
    """Remove SCOPE ID's budget(s); its paused jobs resume."""
    with connection() as conn:
        try:
            result = costs.remove_budget(conn, scope, scope_id, period)
        except InvalidJob as exc:
            raise UserError(str(exc)) from None
    if not result["removed"]:
        raise UserError(f"{scope} {scope_id}: no budget" + (f" per {period}" if period else ""))
    click.echo(f"{scope} {scope_id}: removed {', '.join(result['removed'])}; "
               f"{result['resumed']} paused job(s) resumed")
