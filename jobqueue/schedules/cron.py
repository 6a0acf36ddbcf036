"""Cron expressions evaluated in a time zone: the fire times of a schedule.

Five fields (minute hour day-of-month month day-of-week) or one of @yearly, @annually,
@monthly, @weekly, @daily, @midnight, @hourly. Evaluation is cronsim's, in the schedule's IANA
zone, with the DST rules of Debian's cron: a wall-clock time that does not exist on the
spring-forward day (02:30 in Berlin on the last Sunday of March) fires once at the first
minute after the gap; a time that happens twice on the fall-back day fires once, at its first
occurrence; expressions with a minute or hour step (`*/30 * * * *`) fire at both
occurrences, as every half hour really passes twice. Times go in and out as UTC datetimes.

Why cronsim: small (one module, no dependencies), tz-aware through zoneinfo, released in 2026
and maintained by the Healthchecks.io author, who tests it against cron's DST behaviour.
croniter, also maintained again since pallets-eco took it over, is larger and its DST
handling has a long history of bug reports; we need none of its extensions.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from jobqueue.errors import InvalidSchedule

NICKNAMES = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MAX_EXPRESSION = 200  # characters; a cron line is short


@dataclass(frozen=True)
class Cron:
    """A checked expression (nicknames expanded) and its zone."""

    expression: str
    zone: ZoneInfo

    def after(self, moment: datetime) -> datetime:
        """The first fire strictly after `moment` (aware), in UTC."""
        return next(self.fires_after(moment))

    def fires_after(self, moment: datetime) -> Iterator[datetime]:
        """Fires strictly after `moment`, in order, in UTC (endless)."""
        local = moment.astimezone(self.zone)  # fold set right in a repeated hour
        for fire in CronSim(self.expression, local):
            yield fire.astimezone(UTC)

    def latest_at_or_before(self, moment: datetime) -> datetime | None:
        """The last fire at or before `moment`, in UTC (None if it never fired: cronsim
        looks back until it finds one, so an impossible date like Feb 30 never gets here:
        parse() refuses it)."""
        # cronsim's reverse walk yields fires strictly before its start; fires fall on whole
        # minutes, so starting a second past `moment` (counted in UTC, not on the wall
        # clock of a repeated hour) includes a fire at `moment` itself.
        start = (moment.replace(microsecond=0) + timedelta(seconds=1)).astimezone(self.zone)
        for fire in CronSim(self.expression, start, reverse=True):
            return fire.astimezone(UTC)
        return None


def parse(expression: str, timezone: str = "UTC") -> Cron:
    """A Cron for `expression` in `timezone`; InvalidSchedule naming the field otherwise."""
    zone = parse_timezone(timezone)
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidSchedule("cron: required, e.g. '30 2 * * *' or '@daily'")
    if len(expression) > MAX_EXPRESSION or "\x00" in expression:
        raise InvalidSchedule(f"cron: at most {MAX_EXPRESSION} characters of text")
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text.lower() not in NICKNAMES:
            raise InvalidSchedule(f"cron: unknown {text!r} (known: {', '.join(NICKNAMES)})")
        text = NICKNAMES[text.lower()]
    elif len(text.split(" ")) != 5:
        raise InvalidSchedule(f"cron: {expression!r} must have 5 fields (minute hour "
                              "day-of-month month day-of-week), or be a name like @daily")
    try:
        it = CronSim(text, datetime(2000, 1, 1, tzinfo=zone))
        next(it)  # refuses dates that never come (Feb 30) by searching: bounded below
    except CronSimError as exc:
        raise InvalidSchedule(f"cron: {expression!r}: {exc}") from None
    except StopIteration:
        raise InvalidSchedule(f"cron: {expression!r} never fires") from None
    return Cron(text, zone)


def parse_timezone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name or len(name) > 64 or "\x00" in name:
        raise InvalidSchedule("timezone: must be an IANA zone name like 'Europe/Berlin'")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidSchedule(f"timezone: unknown zone {name!r} (an IANA name like "
                              "'Europe/Berlin' or 'UTC')") from None
