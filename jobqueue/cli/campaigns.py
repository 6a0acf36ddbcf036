"""`jobqueue campaigns create|list|show|run|report|remove`: AI-visibility campaigns
(jobqueue/campaigns/). A campaign file (YAML or TOML) or options define one; a bad file
exits 2 naming FILE:LINE: field."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime

import click

from jobqueue.cli.common import UserError, connection, print_json, print_rows, table


@click.group()
def campaigns() -> None:
    """AI-visibility campaigns: prompts x platforms x samples, brands tracked in the answers."""


def _brand_list(values: tuple[str, ...]) -> list[dict] | None:
    """--brand 'Acme=Acme CRM,acme.io' -> [{name, aliases}]."""
    if not values:
        return None
    out = []
    for value in values:
        name, _, aliases = value.partition("=")
        out.append({"name": name.strip(),
                    "aliases": [a.strip() for a in aliases.split(",") if a.strip()]})
    return out


@campaigns.command("create")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@click.option("--name", default=None, help="The campaign's name (overrides the file's).")
@click.option("--owner", default=None)
@click.option("--prompt", "prompts", multiple=True, help="A prompt (repeatable).")
@click.option("--prompt-file", default=None, help="A JSONL or CSV file of prompts.")
@click.option("--template", default=None, help="CSV: a prompt with {column} placeholders.")
@click.option("--platforms", default=None, help="Platforms to ask: a,b,c.")
@click.option("--samples", type=int, default=None, help="Answers per prompt and platform.")
@click.option("--brand", "brands", multiple=True,
              help="A brand to track: NAME or NAME=ALIAS,ALIAS (repeatable).")
@click.option("--competitor", "competitors", multiple=True,
              help="A competitor: NAME or NAME=ALIAS,ALIAS (repeatable).")
@click.option("--cron", default=None, help="Run on this schedule (5-field cron or @daily).")
@click.option("--timezone", default=None, help="The cron's IANA zone (default UTC).")
@click.option("--extract-platform", default=None,
              help="Analyse answers with an LLM on this platform (string matching is the "
                   "fallback).")
@click.option("--replace", is_flag=True, help="Replace a campaign of the same name.")
def campaigns_create(file, name, owner, prompts, prompt_file, template, platforms, samples,
                     brands, competitors, cron, timezone, extract_platform, replace) -> None:
    """Save a campaign from FILE (YAML/TOML) and/or options."""
    from jobqueue.campaigns import model, store

    overrides = {"name": name, "owner": owner, "prompts": list(prompts) or None,
                 "prompt_file": prompt_file, "template": template, "platforms": platforms,
                 "samples": samples, "brands": _brand_list(brands),
                 "competitors": _brand_list(competitors),
                 "extract": {"platform": extract_platform} if extract_platform else None}
    if cron or timezone:
        overrides["schedule"] = {"cron": cron} | ({"timezone": timezone} if timezone else {})
    try:
        if file:
            spec = model.load_file(file, overrides=overrides)
        else:
            spec = model.build({k: v for k, v in overrides.items() if v is not None})
    except model.InvalidCampaign as exc:
        raise UserError(str(exc)) from None
    with connection() as conn:
        outcome = store.save(conn, spec, datetime.now(UTC), replace=replace)
    if outcome is None:
        raise UserError(f"campaign {spec.name}: exists (--replace replaces it)")
    when = f"; runs {spec.schedule['cron']} ({spec.schedule['timezone']})" \
        if spec.schedule else "; run it with `jobqueue campaigns run`"
    click.echo(f"campaign {spec.name}: {outcome}: {len(spec.prompts)} prompt(s) x "
               f"{len(spec.platforms)} platform(s) x {spec.samples} sample(s), "
               f"{len(spec.brands)} brand(s){when}")


@campaigns.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.option("--owner", default=None)
def campaigns_list(as_json, owner) -> None:
    """Campaigns with their platforms, prompts, brands and schedule."""
    from jobqueue.campaigns import store

    with connection() as conn:
        rows = store.listing(conn, owner=owner)
    print_rows(rows, as_json, "(no campaigns)", _listing_table)


def _listing_table(rows: list[dict]) -> str:
    for r in rows:
        r["platforms_"] = ",".join(r["platforms"])
        r["brands_"] = ",".join(b["name"] for b in r["brands"])
        r["schedule"] = r["cron"] or "-"
    return table(rows, [("name", "NAME"), ("owner", "OWNER"), ("prompts", "PROMPTS"),
                        ("platforms_", "PLATFORMS"), ("samples", "SAMPLES"),
                        ("brands_", "BRANDS"), ("schedule", "SCHEDULE")])


def _get(conn, name: str) -> dict:
    from jobqueue.campaigns import store

    found = store.get(conn, name)
    if found is None:
        raise UserError(f"campaign {name}: not found")
    return found


@campaigns.command("show")
@click.argument("name")
def campaigns_show(name) -> None:
    """A campaign as stored, with its latest runs and spend (JSON)."""
    from jobqueue.campaigns import store

    with connection() as conn:
        found = _get(conn, name)
        print_json(found | {"runs": store.runs(conn, name), "spend": store.spend(conn, name)})


@campaigns.command("run")
@click.argument("name")
def campaigns_run(name) -> None:
    """Run a campaign now: one fan-out batch and an extract job per answer; prints the
    batch id (`jobqueue batch wait ID` follows it)."""
    from jobqueue.campaigns import model, runs

    with connection() as conn:
        found = _get(conn, name)
        try:
            run = runs.run_now(conn, found, datetime.now(UTC))
        except model.InvalidCampaign as exc:
            raise UserError(str(exc)) from None
    click.echo(f"campaign {name}: batch {run['batch_id']} submitted", err=True)
    click.echo(run["batch_id"])


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option}: not a date (YYYY-MM-DD): {value!r}") from None


@campaigns.command("report")
@click.argument("name")
@click.option("--from", "start", default=None, help="First day (YYYY-MM-DD, UTC).")
@click.option("--to", "end", default=None, help="Last day (default: the last with answers).")
@click.option("--csv", "csv_file", default=None, type=click.Path(dir_okay=False),
              help="Write the report as CSV to this file ('-': standard output).")
@click.option("--json", "as_json", is_flag=True)
def campaigns_report(name, start, end, csv_file, as_json) -> None:
    """Visibility, share of voice, position and sentiment per brand and platform over a
    period, with the change against the period before."""
    from jobqueue.campaigns import report, store

    first, last = _day(start, "--from"), _day(end, "--to")
    with connection() as conn:
        campaign = _get(conn, name)
        try:
            data = report.build(conn, campaign, first, last)
        except ValueError as exc:
            raise UserError(f"--{exc}") from None
        spend = store.spend(conn, name)
    if csv_file:
        text = report.to_csv(data)
        if csv_file == "-":
            click.echo(text, nl=False)
        else:
            with open(csv_file, "w", encoding="utf-8", newline="") as f:
                f.write(text)
            click.echo(f"wrote {csv_file}", err=True)
        return
    if as_json:
        click.echo(json.dumps(data | {"spend": spend}, indent=2, default=str))
        return
    click.echo(format_report(data, spend))


def format_report(data: dict, spend: list[dict]) -> str:
    """The report for a terminal: the period totals per platform, the top domains, cost."""
    rows = []
    for t in data["totals"]:
        rows.append({"platform": t["platform"] or "all", "brand": t["brand"]
                     + (" (competitor)" if t["competitor"] else ""),
                     "answers": t["answers"], "visibility": _pct(t["visibility"]),
                     "sov": _pct(t["share_of_voice"]), "position": _num(t["avg_position"]),
                     "sentiment": _num(t["sentiment"], signed=True),
                     "change": _pct(t["change"]["visibility"], signed=True)})
    lines = [f"campaign {data['campaign']}: {data['from']} .. {data['to']} "
             f"(change against {data['previous']['from']} .. {data['previous']['to']})",
             table(rows, [("platform", "PLATFORM"), ("brand", "BRAND"),
                          ("answers", "ANSWERS"), ("visibility", "VISIBILITY"),
                          ("sov", "SHARE OF VOICE"), ("position", "AVG POS"),
                          ("sentiment", "SENTIMENT"), ("change", "VIS CHANGE")])]
    if data["domains"]:
        lines.append("top cited domains: " + ", ".join(
            f"{d['domain']} ({d['citations']})" for d in data["domains"]))
    if spend:
        total = sum(float(s["cost_usd"] or 0) for s in spend)
        calls = sum(s["calls"] for s in spend)
        lines.append(f"cost: ${total:.4f} over {calls} LLM call(s) (" + ", ".join(
            f"{s['platform']} ${float(s['cost_usd'] or 0):.4f}" for s in spend) + ")")
    return "\n".join(lines)


def _num(value, signed: bool = False) -> str | None:
    return None if value is None else f"{value:+.2f}" if signed else f"{value:.2f}"


def _pct(value, signed: bool = False) -> str | None:
    if value is None:
        return None
    return f"{value * 100:+.1f}%" if signed else f"{value * 100:.1f}%"


@campaigns.command("remove")
@click.argument("name")
def campaigns_remove(name) -> None:
    """Remove a campaign, its schedule and its analysed answers (its jobs stay)."""
    from jobqueue.campaigns import store

    with connection() as conn:
        if not store.remove(conn, name):
            raise UserError(f"campaign {name}: not found")
    click.echo(f"campaign {name}: removed")
