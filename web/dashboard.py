"""The dashboard: server-rendered pages for operators who sign in with an admin token, or a
`viewer` one (read-only: every page, no buttons, every POST refused with 403).

Every page needs a signed-in session (others are sent to /login) and every POST an admin and
the session's CSRF token. Each page's changing part is the template block `live`;
static/dashboard.js fetches it again every two seconds (`?partial=1`) and swaps it in, so
pages follow the queue without reloading, with a pause control in the header.

No page view scans the `finished` table without a bound: counts come from finished_counts,
the chart from the minutes it has not seen yet (BRIN), lists from indexes or from a window of
ids (see jobs_window in sql/queries/jobs.sql). Only the confirmation of a bulk action on
"everything matching" counts the whole match, under a statement timeout.

Every job read and change goes through jobqueue/db/store.py, so a job's state here is the one
every other surface reports; only workers, limits and the cache are read here directly. Pages
read through the reader (a replica when JOBQUEUE_READ_DATABASE_URL is set: web/resources.py);
actions change jobs on the primary, and note the primary's WAL position in the session: until
the replica has replayed it, this session's pages read the primary, so an operator always sees
the result of their own action.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from urllib.parse import urlsplit

import psycopg
from flask import (
    Blueprint,
    Response,
    abort,
    flash,
    g,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)

from jobqueue import audit
from jobqueue import queues as queue_settings
from jobqueue.batches import export as batch_export
from jobqueue.batches.progress import like_pattern
from jobqueue.db import store
from jobqueue.db.queries import q
from jobqueue.db.store import JobFilter
from jobqueue.errors import InvalidQueueSettings, QueueBusy
from jobqueue.jobs import FINISHED_STATES, HOT_STATES, STATES
from jobqueue.llm import costs
from web import dashboard_charts, dashboard_jobs
from web.auth import Denied, acting, check_csrf, csrf_token, session_principal, sign_in, sign_out
from web.contract import BadRequest
from web.dashboard_support import (
    change,
    checked,
    note_change,
    read,
    reader,
    render,
    wrote_at,
)
from web.llm_platforms import fire_platforms
from web.resources import resources
from web.schemas import IdList, JobFilterArgs, QueueName

bp = Blueprint("dashboard", __name__)

PAGE = 50             # jobs per page of the list
# Ids one page of the job list examines at most (see jobs_window in sql/queries/jobs.sql): on
# a million finished rows, about 15 ms of index scan and filtering, or 50-70 ms of text search.
SCAN = 50_000
TEXT_SCAN = 20_000
SORT_SCAN = 10_000  # a sorted page sorts the newest this many (a top-N sort: ~25 ms at 10,000)
BATCH_PAGE = 25
DEAD_PAGE = 100
MAX_ID = 2**63 - 1    # "no cursor yet": newer than every id
COUNT_TIMEOUT = "10s"  # the confirmation count of a bulk action may scan the whole table
# Which states each bulk action applies to (shown on the confirmation page).
ACTIONS = {
    "retry": ("dead", "cancelled"),
    "cancel": HOT_STATES,
    "delete": tuple(s for s in STATES if s != "running"),
}
FILTERS = ("queue", "state", "kind", "batch", "owner", "q")


# -- sign-in, CSRF and helpers ---------------------------------------------------------------


@bp.before_request
def _signed_in_admin():
    """Pages need a signed-in admin; state changes need the session's CSRF token too."""
    if request.endpoint == "dashboard.login":
        return None
    try:
        principal = session_principal()
    except Denied as denied:  # the token's rate limit: say so rather than sign out
        return Response(denied.message, status=denied.status, headers=denied.headers,
                        mimetype="text/plain")
    if principal is None:
        if request.args.get("partial"):
            return Response("sign in again", status=401, mimetype="text/plain")
        return redirect(url_for(".login", next=request.full_path.rstrip("?")))
    g.principal = principal
    if request.method == "POST":
        if not principal.admin and request.endpoint != "dashboard.logout":
            return Response("read-only: this token may look, not change anything (sign in "
                            "with an admin token to act)", status=403, mimetype="text/plain")
        check_csrf()
    return None


@bp.context_processor
def _template_helpers() -> dict:
    principal = g.get("principal")
    return {"csrf_token": csrf_token, "principal": principal, "STATES": STATES,
            "can_act": bool(principal and principal.admin),
            "priority_name": dashboard_jobs.priority_name}


def _time(value) -> datetime | None:
    """A timestamp from the database, or from an ISO string inside a job's JSON (None if it
    is not one: error records are written by many hands)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    return value if isinstance(value, datetime) and value.tzinfo else None


@bp.app_template_filter("when")
def _when(value) -> str:
    """Timestamps in UTC, to the second: one clock for every reader."""
    value = _time(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else "—"


@bp.app_template_filter("age")
def _age(seconds) -> str:
    """A duration as people read it: 42s, 3m 05s, 2h 10m, 4d 3h."""
    if seconds is None:
        return "—"
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


@bp.app_template_filter("until")
def _until(value) -> str:
    """The time left until a moment (0s once it passed)."""
    return _age((value - datetime.now(UTC)).total_seconds()) if value else "—"


@bp.app_template_filter("since")
def _since(value) -> str:
    return _age((datetime.now(UTC) - value).total_seconds()) if value else "—"


@bp.app_template_filter("pretty_json")
def _pretty_json(value) -> str:
    """Indented JSON; the template escapes it, so a payload's "<script>" stays text."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _rows(name: str, params: dict | None = None) -> list[dict]:
    """Run one of the dashboard's own queries (workers, limits, cache) unprepared, so it is
    planned for the values it is given."""
    with reader().pool.connection() as conn:
        return conn.execute(q(name), params or {}, prepare=False).fetchall()


# Characters a browser drops from a URL or reads as something else (WHATWG URL parser): C0
# controls and DEL (tab, CR and LF are removed anywhere; others are stripped at the ends or
# break the header), and "\\", which http(s) URLs read as "/".
_URL_TRAPS = re.compile(r"[\x00-\x1f\x7f\\]")


def _safe_next(target: str | None) -> str:
    """Only paths on this site: an open redirect would make the sign-in page a phishing aid.
    A target is refused, not repaired, if a browser would read it differently from us (see
    _URL_TRAPS): "/\t/evil.example" is "//evil.example" to a browser, another host. What is
    left must be a path: one leading "/", no scheme, no host. CR and LF never reach a header.
    """
    if (target and target.startswith("/") and not target.startswith("//")
            and not _URL_TRAPS.search(target)):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return url_for(".overview")


# -- sign-in ---------------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login():
    error, status = None, 200
    if request.method == "POST":
        check_csrf()  # the form's token came with this page: no sign-in from another site
        try:
            sign_in(request.form.get("token", "").strip())
        except Denied as denied:
            error, status = denied.message, denied.status
        else:
            return redirect(_safe_next(request.form.get("next")))
    next_url = request.values.get("next", "")
    return render_template("dashboard/login.html", error=error, next=next_url), status


@bp.post("/logout")
def logout():
    sign_out()
    return redirect(url_for(".login"))


# -- overview --------------------------------------------------------------------------------


@bp.get("/")
def overview():
    queues = read(store.queue_status)
    totals = {state: sum(r[state] for r in queues) for state in STATES}
    return render("overview.html", title="Overview", queues=queues, totals=totals,
                  total=sum(totals.values()),
                  chart=dashboard_charts.throughput(dashboard_charts.buckets("1h"), "1h"))


@bp.get("/queues")
def queues():
    """Every queue with its fleet-wide caps and fairness, each in a form (not refreshed live,
    so a value being typed stays)."""
    settings = {r["queue"]: r for r in read(queue_settings.list_settings)}
    for status in read(store.queue_status):
        settings.setdefault(status["queue"], {
            "queue": status["queue"], "paused": status["paused"], "max_running": None,
            "max_running_per_owner": None, "fair": False, "running": status["running"]})
    return render("queues.html", title="Queues", queues=[settings[n] for n in sorted(settings)],
                  still=True)


@bp.post("/queues/<name>/<any(pause, resume):action>")
def pause_queue(name: str, action: str):
    checked(QueueName, {"name": name})
    try:
        change(queue_settings.pause, name, action == "pause")
    except InvalidQueueSettings as exc:  # a blank name
        flash(f"Queue {name!r}: {exc}", "error")
    else:
        flash(f"Queue {name} {'paused' if action == 'pause' else 'resumed'}.")
    return redirect(url_for(".overview"))


@bp.post("/queues/<name>/settings")
def set_queue_settings(name: str):
    """The overview's caps-and-fairness form: empty cap fields mean no cap."""
    try:
        changes = {
            "max_running": queue_settings.parse_cap(
                "max running", request.form.get("max_running", "")),
            "max_running_per_owner": queue_settings.parse_cap(
                "max running per owner", request.form.get("max_running_per_owner", "")),
        }
        changes["fair"] = (request.form.get("fair") == "on"
                           or changes["max_running_per_owner"] is not None)
        row = change(lambda conn: queue_settings.change(conn, name, **changes))
    except (InvalidQueueSettings, QueueBusy) as exc:
        flash(f"Queue {name}: {exc}", "error")
    else:
        caps = ", ".join(f"{label} {row[key]}" for key, label in (
            ("max_running", "max running"), ("max_running_per_owner", "per owner"))
            if row[key] is not None) or "no caps"
        flash(f"Queue {name}: {caps}, {'fair' if row['fair'] else 'first come first served'}.")
    return redirect(url_for(".queues"))


# -- jobs ------------------------------------------------------------------------------------


def _filter_args(source) -> dict[str, str]:
    """The filter as given (for forms and links): only the fields that are set; 400 for a
    value no job could match."""
    args = {k: source.get(k, "").strip() for k in FILTERS if source.get(k, "").strip()}
    checked(JobFilterArgs, args)
    return args


def _ids(source) -> IdList:
    """The ids of a page or form (ids, upto, before), checked; absent ones are None."""
    data = {"ids": [i for i in source.getlist("ids") if i.strip()]}
    data |= {k: source[k] for k in ("upto", "before") if source.get(k, "").strip()}
    return checked(IdList, data)


def _filter(args: dict[str, str]) -> JobFilter:
    """The filter as the store takes it; None means any."""
    given = checked(JobFilterArgs, args)
    text = given.q
    return JobFilter(
        queue=given.queue, kind=given.kind, owner=given.owner, batch_id=given.batch,
        state=given.state if given.state in STATES else None,
        text=like_pattern(text) if text else None,
    )


@bp.get("/jobs")
def jobs():
    """The job list: newest first by id (paged by id), or sorted by a column within the
    newest jobs' window (paged by number; web/dashboard_jobs.py), with the match count."""
    args = _filter_args(request.args)
    sort = dashboard_jobs.parse_sort(request.args)
    before = _ids(request.args).before or MAX_ID
    if sort.key:
        before = MAX_ID
    scan = TEXT_SCAN if args.get("q") else SCAN
    if sort.key:
        scan = min(scan, SORT_SCAN)
    window = read(store.jobs_window, before, scan)
    floor = window["floor"] or 0
    where = _filter(args)
    queues = read(store.queue_status)
    if sort.key:
        rows = read(store.jobs_page_sorted, where, floor, sort.key, sort.descending, PAGE + 1,
                    sort.page * PAGE)
        more = len(rows) > PAGE and sort.page + 1 < dashboard_jobs.MAX_SORTED_PAGES
        rows, older = rows[:PAGE], None
    else:
        rows = read(store.jobs_page, where, before, floor, PAGE)
        more = False
        if len(rows) == PAGE:
            older = rows[-1]["id"]
        elif window["scanned"] == scan:  # the window ended before the table did: go below
            older = floor
        else:
            older = None
    total = dashboard_jobs.count(read, where, args, window, scan, queues,
                                 None if sort.key else len(rows), PAGE) \
        if before == MAX_ID else None
    return render("jobs.html", title="Jobs", rows=rows, args=args, before=before, older=older,
                  window=window, scan=scan, newest=before == MAX_ID,
                  limited=len(rows) < PAGE and older is not None,
                  queues=[r["queue"] for r in queues], sort=sort, sorts=dashboard_jobs.SORTS,
                  more=more, total=total)


def _bulk_request(values) -> tuple[str, dict[str, str]]:
    """A bulk action's name (checked) and filter, from the query string or the form."""
    action = values.get("action")
    if action not in ACTIONS:
        abort(400, description=f"action: {', '.join(ACTIONS)}")
    return action, _filter_args(values)


@bp.get("/jobs/bulk")
def bulk_confirm():
    """Before acting on everything matching a filter: how many jobs that is, by state."""
    action, args = _bulk_request(request.args)
    try:
        found = read(store.match_counts, _filter(args), timeout=COUNT_TIMEOUT)
    except psycopg.errors.QueryCanceled:
        abort(503, description=f"counting the matching jobs took over {COUNT_TIMEOUT}: "
                               "narrow the filter")
    counts = {r["state"]: r["count"] for r in found}
    states = ACTIONS[action]
    return render("confirm.html", title=f"{action.capitalize()} all matching jobs",
                  action=action, args=args, counts=counts,
                  states=", ".join(states[:-1]) + " or " + states[-1],
                  upto=max((r["upto"] for r in found), default=None),
                  affected=sum(counts.get(s, 0) for s in states),
                  matching=sum(counts.values()))


@bp.post("/jobs/bulk")
def bulk_action():
    action, args = _bulk_request(request.form)
    chosen = _ids(request.form)
    if chosen.ids:  # the jobs ticked on the page, whatever the filter
        where = JobFilter(ids=chosen.ids)
    elif chosen.upto is not None:  # everything matching, as confirmed
        where = _filter(args)
        where.upto = chosen.upto
    else:
        flash("Select some jobs first.", "error")
        return redirect(url_for(".jobs", **args))
    flash(_run_action(action, where))
    return redirect(url_for(".jobs", **args))


def _run_action(action: str, where: JobFilter) -> str:
    """Run a bulk action, recorded on each job it reached with who ran it (ticked or matched
    by the filter); returns what it did, in words."""
    if action == "retry":
        revived = change(store.revive, where, ACTIONS["retry"], acting())
        return f"Retried {len(revived)} job(s)."
    if action == "cancel":
        done = change(store.cancel, where, acting())
        return (f"Cancelled {done['cancelled']} job(s); asked the workers of "
                f"{done['requested']} running job(s) to stop.")
    return f"Deleted {change(store.delete, where, acting())} job(s)."


@bp.get("/jobs/<int:job_id>")
def job(job_id: int):
    found = resources().read(lambda pool: pool.get(job_id), after=wrote_at())
    if found is None:
        abort(404, description=f"job {job_id}: not found (deleted, or pruned after retention)")
    actions = read(audit.of_job, job_id)
    return render("job.html", title=f"Job {job_id}", job=found,
                  timeline=_timeline(found, actions))


def _timeline(job, actions: list[dict] = ()) -> list[dict]:
    """What happened to a job and when, oldest first, with the time since it was created:
    attempts, failures, the end, and the manual actions recorded with who did them (a manual
    retry starts the attempts again from 1: each retry begins a new "run", named on the
    attempts after it). Events at the same instant keep their natural order (started before
    failed)."""
    events = [(job.created_at, 0, "created", "")]
    retries = sorted(a["at"] for a in actions if a["action"] in ("retry", "run-now"))

    def run_of(at) -> str:
        n = sum(1 for r in retries if r <= at)
        return f" (run {n + 1})" if retries and n else ""

    if job.run_at != job.created_at:
        events.append((job.run_at, 1, "runnable from",
                       job.state if job.state in ("scheduled", "retrying") else ""))
    if job.started_at:
        events.append((job.started_at, 2,
                       f"attempt {job.attempts} started{run_of(job.started_at)}", ""))
    for error in job.errors:
        if at := _time(error.get("at")):
            events.append((at, 3, f"attempt {error.get('attempt', '?')} failed{run_of(at)}",
                           f"{error.get('type')}: {error.get('message')}"))
    if job.finished_at:
        events.append((job.finished_at, 4, job.state, ""))
    for a in actions:
        verb = ACTION_WORDS.get(a["action"], a["action"])
        detail = f"via {a['via']}" + (f": {a['detail']}" if a["detail"] else "")
        events.append((a["at"], 5, f"{verb} by {a['actor']}", detail))
    events.sort(key=lambda e: e[:2])
    return [{"at": at, "what": what, "detail": detail,
             "offset": (at - job.created_at).total_seconds()}
            for at, _, what, detail in events]


ACTION_WORDS = {"retry": "retried", "cancel": "cancel asked", "delete": "deleted",
                "run-now": "run now"}


@bp.post("/jobs/<int:job_id>/<any(retry, cancel, delete):action>")
def job_action(job_id: int, action: str):
    client = resources().client
    if action == "retry":
        if client.retry(job_id, acting()):
            flash(f"Job {job_id} queued again.")
        else:
            flash(f"Job {job_id} was not retried: only dead or cancelled jobs retry.", "error")
    elif action == "cancel":
        outcome = client.cancel(job_id, acting())
        flash({"cancelled": f"Job {job_id} cancelled.",
               "requested": f"Job {job_id} is running: its worker was asked to stop it.",
               "finished": f"Job {job_id} had already finished.",
               "not_found": f"Job {job_id} does not exist."}[outcome])
    else:
        flash(_run_action("delete", JobFilter(ids=[job_id])))
        return redirect(url_for(".jobs"))
    note_change()
    return redirect(url_for(".job", job_id=job_id))


# -- dead letters, batches, workers, limits -------------------------------------------------


def _dead_queue(source) -> str | None:
    """The queue the dead letters are narrowed to (query string or form), checked; None:
    every queue."""
    return checked(QueueName, {"name": source["queue"]}).name if source.get("queue") else None


@bp.get("/dead")
def dead():
    queue = _dead_queue(request.args)
    queues = [r for r in read(store.queue_status) if r["dead"]]
    total = sum(r["dead"] for r in queues if queue in (None, r["queue"]))
    return render("dead.html", title="Dead letters", queue=queue, queues=queues, total=total,
                  rows=read(store.dead_jobs, queue, DEAD_PAGE))


@bp.post("/dead/<any(retry, purge):action>")
def dead_action(action: str):
    queue = _dead_queue(request.form)
    ids = _ids(request.form).ids
    back = redirect(url_for(".dead", queue=queue))
    if not ids and request.form.get("all") != "1":
        flash("Select some jobs first.", "error")
        return back
    where = JobFilter(queue=queue, state="dead", ids=ids or None)
    if action == "retry":
        flash(_run_action("retry", where))
    else:
        flash(f"Purged {change(store.delete, where, acting())} dead job(s).")
    return back


@bp.get("/batches")
def batches():
    before = _ids(request.args).before or MAX_ID
    rows = read(store.batches_page, before, BATCH_PAGE)
    for row in rows:
        total = max(row["total"], sum(row[s] for s in STATES) + row["duplicates"], 1)
        # Rows that were duplicates of existing jobs are done (they point at those jobs).
        row["done"] = sum(row[s] for s in FINISHED_STATES) + row["duplicates"]
        row["segments"] = [(s, row[s], 100.0 * row[s] / total)
                           for s in (*STATES, "duplicates") if row[s]]
    spent = read(costs.batches_costs, [r["id"] for r in rows])
    for row in rows:
        row["costs"] = spent.get(row["id"])
    older = rows[-1]["id"] if len(rows) == BATCH_PAGE else None
    return render("batches.html", title="Batches", rows=rows, newest=before == MAX_ID,
                  older=older)


@bp.get("/costs")
def costs_page():
    """What LLM work cost: the last 30 days per day, owner, batch and model, and budgets."""
    views = {by: read(costs.summary, by, 30) for by in ("day", "owner", "batch", "model")}
    return render("costs.html", title="Costs", views=views,
                  budgets=read(costs.list_budgets))


@bp.get("/batches/<int:batch_id>/results.<any(jsonl, csv):fmt>")
def batch_download(batch_id: int, fmt: str):
    """A batch's results as a file, streamed a page of jobs at a time (the API's download
    needs a bearer token, which a browser session does not carry)."""
    client, found = resources().source(lambda pool: pool.batch(batch_id),
                                       after=wrote_at())
    if found is None:
        abort(404, description=f"batch {batch_id}: not found")

    mimetype = "application/x-ndjson" if fmt == "jsonl" else "text/csv"
    return Response(stream_with_context(batch_export.export_lines(client, batch_id, fmt)),
                    mimetype=mimetype, headers={
                        "Content-Disposition": f'attachment; filename="batch-{batch_id}.{fmt}"'})


@bp.get("/workers")
def workers():
    return render("workers.html", title="Workers", rows=_rows("dashboard_workers"))


@bp.get("/limits")
def limits():
    (cache,) = _rows("dashboard_cache")
    calls = cache["hits"] + cache["stored"]
    return render("limits.html", title="Rate limits and cache", rows=_rows("dashboard_limits"),
                  cache=cache, hit_rate=cache["hits"] / calls if calls else None)


# -- schedules -------------------------------------------------------------------------------


@bp.get("/schedules")
def schedules():
    from jobqueue.schedules import store as schedule_store

    return render("schedules.html", title="Schedules",
                  rows=read(schedule_store.listing))


@bp.get("/schedules/<name>")
def schedule(name: str):
    from jobqueue.schedules import store as schedule_store

    before = request.args.get("before", type=int)
    rows = read(schedule_store.listing, None, name)
    if not rows:
        abort(404, description=f"schedule {name}: not found")
    runs = read(schedule_store.runs, name, before, BATCH_PAGE)
    older = runs[-1]["id"] if len(runs) == BATCH_PAGE else None
    return render("schedule.html", title=f"Schedule {name}", s=rows[0], runs=runs,
                  older=older, newest=before is None)


@bp.post("/schedules/<name>/<any(pause, resume, run):action>")
def schedule_action(name: str, action: str):
    from jobqueue.schedules import store as schedule_store
    from jobqueue.schedules import tick

    now = datetime.now(UTC)
    if action == "run":
        found = read(schedule_store.get, name)
        if found is None:
            abort(404, description=f"schedule {name}: not found")
        try:
            platforms = fire_platforms(found)
        except BadRequest as exc:  # the server's platform configuration does not load
            flash(f"Schedule {name}: {exc.message}", "error")
            return redirect(url_for(".schedule", name=name))
        run = change(tick.run_now, name, now, platforms)
        if run is None:
            abort(404, description=f"schedule {name}: not found")
        what = (f"job {run['job_id']}" if run["job_id"] else
                f"batch {run['batch_id']}" if run["batch_id"] else run["reason"])
        flash(f"Schedule {name}: run {run['id']} {run['decision']}: {what}.",
              "error" if run["decision"] == "failed" else "message")
    else:
        if change(schedule_store.set_paused, name, action == "pause", now) is None:
            abort(404, description=f"schedule {name}: not found")
        flash(f"Schedule {name} {'paused' if action == 'pause' else 'resumed'}.")
    return redirect(url_for(".schedule", name=name) if request.form.get("back") == "one"
                    else url_for(".schedules"))
