"""The dashboard's campaign pages: the list, and one campaign's report (visibility per day as
inline SVG lines, share of voice as bars, the period's table with its change, top cited
domains and cost), read from the campaign rollup (jobqueue/campaigns/report.py)."""

from __future__ import annotations

from datetime import date

from flask import Blueprint, abort, request

from web.dashboard_support import attach_once, read, render

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777",
           "#65a30d", "#475569", "#ea580c")


@attach_once
def attach(bp: Blueprint) -> None:
    """Add the pages to the dashboard blueprint (once, before it is registered)."""
    bp.add_url_rule("/campaigns", "campaigns", campaigns_page, methods=["GET"])
    bp.add_url_rule("/campaigns/<name>", "campaign", campaign_page, methods=["GET"])


def campaigns_page():
    from jobqueue.campaigns import store

    return render("campaigns.html", title="Campaigns", rows=read(store.listing))


def _day(name: str) -> date | None:
    value = request.args.get(name) or None
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        abort(400, description=f"{name}: not a date (YYYY-MM-DD)")


def campaign_page(name: str):
    from jobqueue.campaigns import model, report, store

    campaign = read(store.get, name) if model.NAME.match(name) else None  # no such name
    if campaign is None:
        abort(404, description=f"campaign {name}: not found")
    try:
        data = read(report.build, campaign, _day("from"), _day("to"))
    except ValueError as exc:
        abort(400, description=str(exc))
    spend = read(store.spend, name)
    colours = {b: PALETTE[i % len(PALETTE)] for i, b in enumerate(data["brands"])}
    return render("campaign.html", title=f"Campaign {name}", c=campaign, r=data,
                  colours=colours, lines=visibility_chart(data, colours),
                  bars=[t for t in data["totals"] if t["platform"] == ""],
                  spend=spend, cost=sum(float(s["cost_usd"] or 0) for s in spend))


def visibility_chart(data: dict, colours: dict, width: int = 900, height: int = 180) -> dict:
    """Daily visibility of each brand over all platforms as SVG polylines (0..100%)."""
    per_day: dict[str, dict[str, list[int]]] = {}
    for d in data["daily"]:
        cell = per_day.setdefault(d["day"], {}).setdefault(d["brand"], [0, 0])
        cell[0] += d["mentions"]
        cell[1] += d["answers"]
    days = sorted(per_day)
    step = width / max(1, len(days) - 1)
    lines = []
    for brand in data["brands"]:
        points, dots = [], []
        for i, day in enumerate(days):
            mentions, answers = per_day[day].get(brand, [0, 0])
            if answers:
                x = round(i * step if len(days) > 1 else width / 2, 1)
                y = round(height - mentions / answers * height, 1)
                points.append(f"{x},{y}")
                dots.append((x, y, f"{brand} {day}: {mentions / answers:.1%} of {answers}"))
        lines.append({"brand": brand, "colour": colours[brand], "points": points,
                      "dots": dots})
    return {"width": width, "height": height, "lines": lines, "days": days}
