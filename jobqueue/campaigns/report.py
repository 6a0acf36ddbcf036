"""The visibility report of a campaign, read from its daily rollup (campaign_daily,
campaign_domains_daily) and never from the answers, so its cost does not grow with them.

Per brand x platform x day, and per brand x platform (and all platforms, platform '') over
the period [from, to]:
- visibility: the share of answers that mention the brand (mentions / answers);
- share of voice: its mentions / the mentions of every tracked brand (same platform, period);
- average position: its mean rank among the tracked brands mentioned (1 = first);
- sentiment: its mean sentiment (-1..1) over the answers that mention it;
- change: each figure minus the same figure over the previous period of equal length.
Plus the most cited domains. A figure with nothing to divide by is None.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta

import psycopg
from psycopg.rows import dict_row

from jobqueue.db.queries import q

DEFAULT_DAYS = 30
MAX_DAYS = 3660
EARLIEST, LATEST = date(1900, 1, 1), date(9000, 12, 31)  # the days a report may name
TOP_DOMAINS = 10
FIGURES = ("visibility", "share_of_voice", "avg_position", "sentiment")


def period(conn: psycopg.Connection, campaign_id: int, start: date | None,
           end: date | None) -> tuple[date, date]:
    """[from, to]: given, or DEFAULT_DAYS days ending at the last day with answers (today
    when none). ValueError naming `from`/`to` when the range is backwards or too long, or
    a day lies outside EARLIEST..LATEST (the previous period and the default end are computed
    from them: near date.min or date.max that arithmetic overflowed)."""
    for field, day in (("from", start), ("to", end)):
        if day is not None and not EARLIEST <= day <= LATEST:
            raise ValueError(f"{field}: {day} is outside {EARLIEST} to {LATEST}")
    if end is None:
        if start is not None:
            end = start + timedelta(days=DEFAULT_DAYS - 1)
        else:
            row = conn.cursor(row_factory=dict_row).execute(
                q("campaign_days"), {"campaign_id": campaign_id}).fetchone()
            end = row["last"] or datetime.now(UTC).date()
    if start is None:
        start = end - timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise ValueError(f"from: {start} is after to ({end})")
    if (end - start).days + 1 > MAX_DAYS:
        raise ValueError(f"to: the period is longer than {MAX_DAYS} days")
    return start, end


def _ratio(a, b, digits: int = 4):
    return None if not b else round(a / b, digits)


def _figures(answers: int, mentions: int, position_sum: int, sentiment_sum: float,
             all_mentions: int) -> dict:
    return {"answers": answers, "mentions": mentions,
            "visibility": _ratio(mentions, answers),
            "share_of_voice": _ratio(mentions, all_mentions),
            "avg_position": _ratio(position_sum, mentions),
            "sentiment": _ratio(sentiment_sum, mentions)}


def _rollup(rows: list[dict], key) -> dict[tuple, dict]:
    """Sum rows by key(row) -> (group, brand); figures per key with the group's mentions."""
    sums: dict[tuple, list] = defaultdict(lambda: [0, 0, 0, 0.0])
    for r in rows:
        s = sums[key(r)]
        s[0] += r["answers"]
        s[1] += r["mentions"]
        s[2] += r["position_sum"]
        s[3] += r["sentiment_sum"]
    group_mentions: dict = defaultdict(int)
    for (group, _), s in sums.items():
        group_mentions[group] += s[1]
    return {k: _figures(s[0], s[1], s[2], s[3], group_mentions[k[0]]) for k, s in sums.items()}


def _totals(rows: list[dict]) -> dict[tuple, dict]:
    """(platform, brand) -> figures over the period; platform '' = all platforms."""
    out = _rollup(rows, lambda r: (r["platform"], r["brand"]))
    out |= _rollup(rows, lambda r: ("", r["brand"]))
    return out


def build(conn: psycopg.Connection, campaign: dict, start: date | None = None,
          end: date | None = None) -> dict:
    """The report of `campaign` (a row of store.get) as JSON-ready data."""
    cur = conn.cursor(row_factory=dict_row)
    start, end = period(conn, campaign["id"], start, end)
    length = (end - start).days + 1
    prev_start, prev_end = start - timedelta(days=length), start - timedelta(days=1)
    params = {"campaign_id": campaign["id"], "from": start, "to": end}
    daily = cur.execute(q("campaign_report_daily"), params).fetchall()
    # The previous period's figures feed the change only: its sums per (platform, brand).
    previous = cur.execute(q("campaign_report_totals"), params | {
        "from": prev_start, "to": prev_end}).fetchall()
    domains = cur.execute(q("campaign_report_domains"), params).fetchall()

    now, before = _totals(daily), _totals(previous)
    brands = [b["name"] for b in campaign["brands"]]
    competitor = {b["name"]: b.get("competitor", False) for b in campaign["brands"]}
    platforms = list(campaign["platforms"])
    totals = []
    for platform in ["", *platforms]:
        for brand in brands:
            cur_f = now.get((platform, brand)) or _figures(0, 0, 0, 0.0, 0)
            prev_f = before.get((platform, brand))
            change = {f: (None if prev_f is None or cur_f[f] is None or prev_f[f] is None
                          else round(cur_f[f] - prev_f[f], 4)) for f in FIGURES}
            totals.append({"platform": platform, "brand": brand,
                           "competitor": competitor[brand]} | cur_f | {
                "previous": {f: prev_f[f] for f in FIGURES} if prev_f else None,
                "change": change})
    by_day = _rollup(daily, lambda r: ((r["day"], r["platform"]), r["brand"]))
    days = [{"day": d.isoformat(), "platform": p, "brand": b} | f
            for ((d, p), b), f in sorted(by_day.items())]
    return {"campaign": campaign["name"], "campaign_id": campaign["id"],
            "from": start.isoformat(), "to": end.isoformat(),
            "previous": {"from": prev_start.isoformat(), "to": prev_end.isoformat()},
            "brands": brands, "platforms": platforms, "totals": totals, "daily": days,
            "domains": _top_domains(domains)}


def _top_domains(rows: list[dict]) -> list[dict]:
    overall: dict[str, int] = defaultdict(int)
    per: dict[str, dict[str, int]] = defaultdict(dict)
    for r in rows:
        overall[r["domain"]] += r["citations"]
        per[r["domain"]][r["platform"]] = r["citations"]
    ranked = sorted(overall.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_DOMAINS]
    return [{"domain": d, "citations": n, "platforms": per[d]} for d, n in ranked]


CSV_COLUMNS = ("period", "day", "platform", "brand", "answers", "mentions", "visibility",
               "share_of_voice", "avg_position", "sentiment", "change_visibility",
               "change_share_of_voice", "change_avg_position", "change_sentiment")


def to_csv(report: dict) -> str:
    """The report as CSV: one row per brand x platform over the period (platform 'all' for
    every platform; the change columns against the previous period), then one per
    brand x platform x day."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    label = f"{report['from']}..{report['to']}"
    for t in report["totals"]:
        w.writerow([label, "", t["platform"] or "all", t["brand"], t["answers"],
                    t["mentions"], *(_cell(t[f]) for f in FIGURES),
                    *(_cell(t["change"][f]) for f in FIGURES)])
    for d in report["daily"]:
        w.writerow(["day", d["day"], d["platform"], d["brand"], d["answers"], d["mentions"],
                    *(_cell(d[f]) for f in FIGURES), "", "", "", ""])
    return out.getvalue()


def _cell(value) -> str:
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)
