"""What a campaign is, checked: its name, owner, prompt set, platforms, samples, schedule,
the brands to track (with aliases) and competitors, and how answers are analysed.

build() takes plain fields (from a campaign file, CLI options or an HTTP body) and returns a
CampaignSpec or raises InvalidCampaign whose message starts with the field at fault
(`brands[1].aliases[0]: ...`); load_file() reads a YAML or TOML campaign file and names the
file and line of the field. The CLI, the HTTP API and the tests refuse the same things with
the same words.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any

from jobqueue.batches.specs import MAX_SAMPLES
from jobqueue.errors import InvalidJob, InvalidSchedule, JobqueueError
from jobqueue.jobs import check_text, to_json

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,89}$")
FIELDS = ("name", "owner", "prompts", "prompt_file", "template", "format", "platforms",
          "samples", "schedule", "brands", "competitors", "extract")
SCHEDULE_FIELDS = ("cron", "timezone", "misfire")
BRAND_FIELDS = ("name", "aliases")
MAX_PROMPTS = 10_000
MAX_BRANDS = 100
MAX_ALIASES = 20
MAX_PROMPT_CHARS = 20_000


class InvalidCampaign(JobqueueError, ValueError):
    """A campaign that cannot be saved; the message starts with the field at fault."""

    @property
    def field(self) -> str:
        return str(self).partition(":")[0]


@dataclass
class CampaignSpec:
    """A checked campaign definition, as stored."""

    name: str
    platforms: list[str]
    prompts: list[dict[str, Any]]
    brands: list[dict[str, Any]]
    owner: str | None = None
    samples: int = 1
    prompt_source: str | None = None
    schedule: dict[str, str] | None = None
    extract: dict[str, Any] = field(default_factory=dict)


def _unknown(given: dict, known) -> list[str]:
    """The keys of `given` not in `known`, sorted as text (a YAML file may mix keys of
    several types, which sorted() alone cannot order)."""
    return sorted(map(str, set(given) - set(known)))


def check_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise InvalidCampaign("name: 1-90 characters of letters, digits and _ . @ -, starting "
                              f"with a letter or digit; got {name!r}")
    return name


def _text(value: Any, where: str, *, max_length: int = 200) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidCampaign(f"{where}: must be a non-empty string, got {value!r}")
    try:
        check_text(value, where, max_length=max_length)
    except InvalidJob as exc:
        raise InvalidCampaign(str(exc)) from None
    return value.strip()


def build(fields: dict[str, Any], *, base_dir: str | None = None,
          platforms: dict | None = None) -> CampaignSpec:
    """A CampaignSpec from plain fields (see FIELDS); InvalidCampaign names the field.
    `platforms`: the configured platforms (jobqueue.toml's when None)."""
    if not isinstance(fields, dict):
        raise InvalidCampaign("campaign: must be a table/object of fields")
    unknown = _unknown(fields, FIELDS)
    if unknown:
        raise InvalidCampaign(f"{unknown[0]}: unknown field (known: {', '.join(FIELDS)})")
    given = {k: v for k, v in fields.items() if v is not None}
    name = check_name(given.get("name"))
    owner = given.get("owner")
    if owner is not None:
        owner = _text(owner, "owner")
    spec = CampaignSpec(name=name, owner=owner, platforms=_platforms(given, platforms),
                        prompts=[], brands=_brands(given))
    samples = given.get("samples", 1)
    if isinstance(samples, bool) or not isinstance(samples, int) \
            or not 1 <= samples <= MAX_SAMPLES:
        raise InvalidCampaign(f"samples: must be an integer from 1 to {MAX_SAMPLES}, "
                              f"got {samples!r}")
    spec.samples = samples
    spec.prompts, spec.prompt_source = _prompts(given, base_dir)
    spec.schedule = _schedule(given.get("schedule"))
    spec.extract = _extract(given.get("extract"), platforms)
    return spec


def settings_of(names: list[str], platforms: dict | None = None) -> list:
    """The configured platform (llm.platforms.Platform) of each name, in order: schedules'
    platform_settings (jobqueue.toml's when `platforms` is None); InvalidCampaign naming
    `platforms` when one is not configured (or the config does not load)."""
    from jobqueue.schedules.spec import platform_settings

    try:
        return [platform_settings(name, platforms) for name in names]
    except InvalidSchedule as exc:
        raise InvalidCampaign(f"platforms: {str(exc).partition(': ')[2]}") from None


def _platforms(given: dict, platforms: dict | None) -> list[str]:
    from jobqueue.batches.specs import parse_platforms

    value = given.get("platforms")
    if value is None:
        raise InvalidCampaign("platforms: required, the platforms to ask (e.g. [openai, gemini])")
    if not isinstance(value, str | list):
        raise InvalidCampaign("platforms: must be a list of platform names or 'a,b'")
    try:
        names = parse_platforms(value)
    except ValueError as exc:
        raise InvalidCampaign(f"platforms: {exc}") from None
    settings_of(names, platforms)
    return names


def _brands(given: dict) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    seen: set[str] = set()
    for key, competitor in (("brands", False), ("competitors", True)):
        value = given.get(key, [])
        if not isinstance(value, list):
            raise InvalidCampaign(f"{key}: must be a list of brands (a name, or "
                                  "{name, aliases})")
        for i, item in enumerate(value):
            where = f"{key}[{i}]"
            if isinstance(item, str):
                item = {"name": item}
            if not isinstance(item, dict):
                raise InvalidCampaign(f"{where}: must be a name or {{name, aliases}}")
            extra = _unknown(item, BRAND_FIELDS)
            if extra:
                raise InvalidCampaign(f"{where}.{extra[0]}: unknown field (known: name, "
                                      "aliases)")
            brand = _text(item.get("name"), f"{where}.name")
            aliases = item.get("aliases", [])
            if not isinstance(aliases, list) or len(aliases) > MAX_ALIASES:
                raise InvalidCampaign(f"{where}.aliases: must be a list of at most "
                                      f"{MAX_ALIASES} names")
            names = [brand] + [_text(a, f"{where}.aliases[{j}]")
                               for j, a in enumerate(aliases)]
            for j, n in enumerate(names):
                if n.casefold() in seen:
                    place = f"{where}.name" if j == 0 else f"{where}.aliases[{j - 1}]"
                    raise InvalidCampaign(f"{place}: {n!r} names another brand already")
                seen.add(n.casefold())
            out.append({"name": brand, "aliases": names[1:], "competitor": competitor})
    if not any(not b["competitor"] for b in out):
        raise InvalidCampaign("brands: required, at least one brand to track")
    if len(out) > MAX_BRANDS:
        raise InvalidCampaign(f"brands: at most {MAX_BRANDS} brands and competitors together")
    return out


def _prompts(given: dict, base_dir: str | None) -> tuple[list[dict], str | None]:
    if ("prompts" in given) == ("prompt_file" in given):
        raise InvalidCampaign("prompts: give prompts (a list) or prompt_file, one of them")
    if "prompts" in given:
        for stray in ("template", "format"):
            if stray in given:
                raise InvalidCampaign(f"{stray}: goes with prompt_file")
        value = given["prompts"]
        if not isinstance(value, list) or not value:
            raise InvalidCampaign("prompts: must be a non-empty list of prompts")
        if len(value) > MAX_PROMPTS:
            raise InvalidCampaign(f"prompts: at most {MAX_PROMPTS}, got {len(value)}")
        rows = []
        for i, item in enumerate(value):
            where = f"prompts[{i}]"
            metadata: Any = {}
            if isinstance(item, dict):
                extra = _unknown(item, {"prompt", "metadata"})
                if extra:
                    raise InvalidCampaign(f"{where}.{extra[0]}: unknown field (known: prompt, "
                                          "metadata)")
                metadata = item.get("metadata", {})
                if not isinstance(metadata, dict):
                    raise InvalidCampaign(f"{where}.metadata: must be a table/object")
                try:  # dates, bytes, cycles (YAML anchors), NUL, NaN: stored as jsonb
                    to_json(metadata, f"{where}.metadata")
                except InvalidJob as exc:
                    raise InvalidCampaign(str(exc)) from None
                item, where = item.get("prompt"), f"{where}.prompt"
            text = _text(item, where, max_length=MAX_PROMPT_CHARS)
            rows.append({"messages": [{"role": "user", "content": text}],
                         "metadata": metadata})
        return rows, None
    return _prompt_file(given, base_dir)


def _prompt_file(given: dict, base_dir: str | None) -> tuple[list[dict], str]:
    from jobqueue.batches import files as batchfiles

    path = given["prompt_file"]
    if not isinstance(path, str) or not path:
        raise InvalidCampaign("prompt_file: must be a path")
    fmt, template = given.get("format"), given.get("template")
    if fmt is not None and fmt not in ("jsonl", "csv"):
        raise InvalidCampaign(f"format: must be jsonl or csv, got {fmt!r}")
    if template is not None:
        _text(template, "template", max_length=MAX_PROMPT_CHARS)
    full = os.path.abspath(os.path.join(base_dir or os.getcwd(), path))
    if not os.path.isfile(full):
        raise InvalidCampaign(f"prompt_file: {path}: no such file")
    fmt = fmt or ("csv" if path.lower().endswith(".csv") else "jsonl")
    report = batchfiles.validate(full, template=template, fmt=fmt)
    if not report.ok:
        raise InvalidCampaign(f"prompt_file: {report.lines()[0]}")
    if not 0 < report.rows <= MAX_PROMPTS:
        raise InvalidCampaign(f"prompt_file: {path}: must hold 1 to {MAX_PROMPTS} prompts, "
                              f"has {report.rows}")
    rows = []
    for row in batchfiles.iter_rows(full, template=template, fmt=fmt):
        item: dict[str, Any] = {"messages": row.messages, "metadata": row.metadata or {}}
        for key in ("model", "max_tokens", "temperature"):
            if getattr(row, key) is not None:
                item[key] = getattr(row, key)
        rows.append(item)
    return rows, full


def _schedule(value: Any) -> dict[str, str] | None:
    from jobqueue.schedules import cron

    if value is None:
        return None
    if isinstance(value, str):
        value = {"cron": value}
    if not isinstance(value, dict):
        raise InvalidCampaign('schedule: must be a cron expression or {cron, timezone, misfire}')
    extra = _unknown(value, SCHEDULE_FIELDS)
    if extra:
        raise InvalidCampaign(f"schedule.{extra[0]}: unknown field (known: "
                              f"{', '.join(SCHEDULE_FIELDS)})")
    out = {"cron": value.get("cron"), "timezone": value.get("timezone", "UTC"),
           "misfire": value.get("misfire", "once")}
    try:
        cron.parse(out["cron"], out["timezone"])
    except InvalidSchedule as exc:
        raise InvalidCampaign(f"schedule.{exc}") from None
    if out["misfire"] not in ("skip", "once", "all"):
        raise InvalidCampaign(f"schedule.misfire: must be skip, once or all, "
                              f"got {out['misfire']!r}")
    out["cron"] = " ".join(out["cron"].split())
    return out


def _extract(value: Any, platforms: dict | None) -> dict[str, Any]:
    from jobqueue.schedules.spec import platform_settings

    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidCampaign("extract: must be {platform = NAME} (an LLM analyses each "
                              "answer) or {} (string matching only)")
    extra = _unknown(value, {"platform"})
    if extra:
        raise InvalidCampaign(f"extract.{extra[0]}: unknown field (known: platform)")
    if "platform" in value:
        try:
            platform_settings(value["platform"], platforms)
        except InvalidSchedule as exc:
            raise InvalidCampaign(f"extract.{exc}") from None
        return {"platform": value["platform"]}
    return {}


# -- campaign files ---------------------------------------------------------------------------

def load_file(path: str, platforms: dict | None = None,
              overrides: dict[str, Any] | None = None) -> CampaignSpec:
    """A campaign from a YAML (.yaml, .yml) or TOML (.toml) file; `overrides` (CLI options)
    win over the file's fields. InvalidCampaign says `FILE:LINE: field: problem`."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidCampaign(f"{path}: cannot read it ({exc})") from None
    is_toml = path.lower().endswith(".toml")
    try:
        data = _parse_toml(text) if is_toml else _parse_yaml(text)
    except _Syntax as exc:
        raise InvalidCampaign(f"{path}:{exc.line}: {exc.message}") from None
    if not isinstance(data, dict):
        raise InvalidCampaign(f"{path}:1: campaign: the file must hold a table/mapping of "
                              "fields")
    data = data | {k: v for k, v in (overrides or {}).items() if v is not None}
    try:
        return build(data, base_dir=os.path.dirname(os.path.abspath(path)),
                     platforms=platforms)
    except InvalidCampaign as exc:
        line = line_of(text, exc.field, is_toml)
        raise InvalidCampaign(f"{path}:{line}: {exc}") from None


class _Syntax(JobqueueError):
    """A campaign file that does not parse (turned into InvalidCampaign with its line)."""

    def __init__(self, line: int, message: str):
        super().__init__(message)
        self.line, self.message = line, message


def _parse_toml(text: str) -> Any:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        found = re.search(r"line (\d+)", str(exc))
        raise _Syntax(int(found[1]) if found else 1, f"not valid TOML ({exc})") from None
    except RecursionError:
        raise _Syntax(1, "not valid TOML (nested too deeply)") from None


def _parse_yaml(text: str) -> Any:
    try:
        import yaml
    except ImportError:
        raise _Syntax(1, "reading YAML needs pyyaml (pip install pyyaml); or write the "
                         "campaign in TOML") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise _Syntax(mark.line + 1 if mark else 1,
                      f"not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    except RecursionError:
        raise _Syntax(1, "not valid YAML (nested too deeply)") from None


def line_of(text: str, field_path: str, is_toml: bool) -> int:
    """The line where a field (`brands[1].aliases[0]`) is written, as near as the file shows
    it: the line of its innermost named key found after its parents' lines; 1 if none."""
    keys = [k for k in re.split(r"\[\d+\]|\.", field_path) if k]
    lines = text.splitlines()
    start, found = 0, 1
    for key in keys:
        pattern = (re.compile(rf"^\s*(\[+\s*)?{re.escape(key)}\s*(=|\]|\.)") if is_toml
                   else re.compile(rf"^\s*(-\s+)?{re.escape(key)}\s*:"))
        for number in range(start, len(lines)):
            if pattern.search(lines[number]) or (
                    not is_toml and re.search(rf"[{{,]\s*{re.escape(key)}\s*:",
                                              lines[number])):
                start, found = number, number + 1
                break
    return found
