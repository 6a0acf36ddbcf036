"""What the APIs of the named things an owner saves (web/schedules.py, web/campaigns.py)
share, so both answer the same way: whose a saved one is (a non-admin's is theirs; naming
another owner is 403), the 409 for a name another owner holds or that POST finds taken, the
answer to a removal, and rows as JSON (times in ISO 8601).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from flask import g

from web.contract import BadRequest
from web.schemas import ResponseModel


class Removed(ResponseModel):
    name: str
    removed: Literal[True]


def with_owner(fields: dict) -> dict:
    """`fields` of a save with the owner it gets: the caller's, unless an admin names one."""
    if not g.principal.admin:
        if "owner" in fields and fields["owner"] != g.principal.owner:
            raise BadRequest("owner: only an admin token may name another owner", "owner", 403,
                             "forbidden")
        fields["owner"] = g.principal.owner
    return fields


def check_not_others(what: str, name: str, existing: dict | None) -> None:
    """409 when the `what` named `name` is another owner's: the caller may neither see nor
    replace it (an admin may)."""
    if existing is not None and not g.principal.can_see(existing["owner"]):
        raise BadRequest(f"{what} {name}: exists", field="name", status=409, code="conflict")


def taken(what: str, name: str) -> BadRequest:
    """The 409 of a POST whose name is taken (PUT replaces)."""
    return BadRequest(f"{what} {name}: exists (PUT /api/{what}s/{name} replaces it)",
                      field="name", status=409, code="conflict")


def as_json(row: dict) -> dict:
    """A row with its times (datetime, date) as ISO 8601 text."""
    return {k: v.isoformat() if isinstance(v, datetime | date) else v for k, v in row.items()}
