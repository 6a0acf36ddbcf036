"""The `extract` step: what one answer says about the tracked brands, stored and added to the
campaign's daily rollup in one transaction.

The deterministic pass (the default, and the fallback) matches each brand's name and aliases
case-insensitively at word boundaries (a name may start or end with punctuation, `C++`,
`acme.io`; spaces inside a name match any run of whitespace); a brand's position is its rank
among the tracked brands in order of first mention (1 = first); its sentiment is a lexicon
pass over the sentences that mention it ((positive - negative) / (positive + negative), a
negation word just before flips a word; 0 when none); cited URLs are the http(s) URLs in the
text, with their domain (no `www.`).

With `extract = {platform = NAME}` an LLM call (a JSON schema, through ctx.llm so limits and
the campaign's budget apply) does the analysis instead; its answer is validated
(from_llm), and anything invalid falls back to the deterministic pass.

The task `campaign.extract` (extract_task, registered by jobqueue/builtin_tasks.py) runs as a
dependent job of each answer (jobqueue/campaigns/runs.py).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog
from psycopg.rows import dict_row

from jobqueue.db.queries import q
from jobqueue.errors import Permanent

log = structlog.get_logger("jobqueue.campaigns")

MAX_CITATIONS = 100
POSITIVE = frozenset(str.split("""best great excellent good reliable recommended recommend popular
    leading trusted fast easy intuitive powerful affordable love loved favorite favourite
    top strong robust solid outstanding impressive friendly helpful secure innovative
    flexible simple"""))
NEGATIVE = frozenset(str.split("""bad poor worst expensive slow buggy unreliable limited difficult
    complicated clunky outdated weak avoid hate disappointing lacking overpriced confusing
    frustrating insecure problem problems issues issue complaints costly"""))
NEGATIONS = frozenset(str.split("not no never hardly isn't isnt doesn't doesnt don't dont"))
_WORD = re.compile(r"[\w']+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_URL = re.compile(r"https?://[^\s<>()\[\]{}\"'`|\\^]+", re.IGNORECASE)


@dataclass(frozen=True)
class Mention:
    brand: str
    mentioned: bool
    position: int | None = None
    offset: int | None = None
    sentiment: float | None = None


@dataclass(frozen=True)
class Analysis:
    method: str  # 'rules' or 'llm'
    mentions: list[Mention]
    citations: list[tuple[str, str]]  # (url, domain)

    def summary(self) -> dict:
        return {"method": self.method,
                "mentioned": [m.brand for m in sorted(
                    (m for m in self.mentions if m.mentioned), key=lambda m: m.position or 0)],
                "citations": len(self.citations)}


def _name_pattern(name: str) -> str:
    parts = [re.escape(p) for p in name.split()]
    return r"\s+".join(parts)


class Matcher:
    """The tracked brands' names and aliases as one regex (longest first, so `Acme Cloud`
    wins over `Acme` where both are tracked)."""

    def __init__(self, brands: list[dict[str, Any]]):
        self.brands = [b["name"] for b in brands]
        self._owner: dict[str, str] = {}
        names = []
        for b in brands:
            for n in [b["name"], *b.get("aliases", [])]:
                key = " ".join(n.split()).casefold()
                if key and key not in self._owner:
                    self._owner[key] = b["name"]
                    names.append(n)
        names.sort(key=lambda n: -len(n))
        alternation = "|".join(_name_pattern(n) for n in names) or r"(?!)"
        self._regex = re.compile(rf"(?<!\w)(?:{alternation})(?!\w)", re.IGNORECASE)

    def find(self, text: str) -> list[tuple[str, int, int]]:
        """(brand, start, end) of every mention, in text order."""
        out = []
        for m in self._regex.finditer(text):
            brand = self._owner.get(" ".join(m[0].split()).casefold())
            if brand is None:  # a case-fold that re.IGNORECASE matched differently
                brand = next((v for k, v in self._owner.items()
                              if re.fullmatch(_name_pattern(k), m[0], re.IGNORECASE)), None)
            if brand is not None:
                out.append((brand, m.start(), m.end()))
        return out


def sentiment(text: str) -> float:
    """(positive - negative) / (positive + negative) over the lexicon's words; 0 if none."""
    pos = neg = 0
    previous = ""
    for word in _WORD.findall(text.casefold()):
        score = 1 if word in POSITIVE else -1 if word in NEGATIVE else 0
        if score and previous in NEGATIONS:
            score = -score
        pos += score > 0
        neg += score < 0
        previous = word
    return 0.0 if pos + neg == 0 else round((pos - neg) / (pos + neg), 4)


def citations(text: str) -> list[tuple[str, str]]:
    """The http(s) URLs cited, once each in order, with their domain."""
    out, seen = [], set()
    for m in _URL.finditer(text):
        url = m[0].rstrip(".,;:!?*_~")
        try:
            host = urlsplit(url).hostname
        except ValueError:
            continue
        if not host or url in seen or "." not in host:
            continue
        seen.add(url)
        out.append((url, host.removeprefix("www.")))
        if len(out) == MAX_CITATIONS:
            break
    return out


def analyse(text: str, brands: list[dict[str, Any]]) -> Analysis:
    """The deterministic pass over an answer."""
    matcher = Matcher(brands)
    # a name inside a cited URL is a citation, not a mention: URLs are blanked (same length)
    found = matcher.find(_URL.sub(lambda m: " " * len(m[0]), text))
    first: dict[str, int] = {}
    for brand, start, _ in found:
        first.setdefault(brand, start)
    ranks = {b: i + 1 for i, b in enumerate(sorted(first, key=first.__getitem__))}
    spans = _sentence_spans(text)
    mentions = []
    for brand in matcher.brands:
        if brand not in first:
            mentions.append(Mention(brand, False))
            continue
        own = [(a, b) for name, a, b in found if name == brand]
        sentences = sorted({s for s in spans for a, b in own if s[0] < b and a < s[1]})
        scored = " ".join(text[a:b] for a, b in sentences)
        mentions.append(Mention(brand, True, ranks[brand], first[brand], sentiment(scored)))
    return Analysis("rules", mentions, citations(text))


def _sentence_spans(text: str) -> list[tuple[int, int]]:
    spans, start = [], 0
    for sep in _SENTENCE.finditer(text):
        spans.append((start, sep.start()))
        start = sep.end()
    spans.append((start, len(text)))
    return spans


# -- the LLM's analysis -----------------------------------------------------------------------

SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["brands", "citations"],
    "properties": {
        "brands": {"type": "array", "items": {
            "type": "object", "additionalProperties": False,
            "required": ["name", "mentioned", "position", "sentiment"],
            "properties": {"name": {"type": "string"}, "mentioned": {"type": "boolean"},
                           "position": {"type": ["integer", "null"], "minimum": 1},
                           "sentiment": {"type": ["number", "null"], "minimum": -1,
                                         "maximum": 1}}}},
        "citations": {"type": "array", "items": {"type": "string"}}}}
INSTRUCTIONS = ("You analyse an AI assistant's answer for brand visibility. For each tracked "
                "brand say whether the answer mentions it, its rank among the tracked brands "
                "in order of first mention (1 = first; null if not mentioned), and the "
                "answer's sentiment toward it from -1 to 1. List the URLs the answer cites. "
                "Answer with JSON matching the schema.")


def llm_request(text: str, brands: list[dict[str, Any]]) -> dict:
    tracked = [{"name": b["name"], "aliases": b.get("aliases", [])} for b in brands]
    return {"messages": [{"role": "system", "content": INSTRUCTIONS},
                         {"role": "user", "content": json.dumps(
                             {"tracked_brands": tracked, "answer": text})}],
            "response_format": {"type": "json_schema", "json_schema": {
                "name": "brand_mentions", "strict": True, "schema": SCHEMA}},
            "temperature": 0}


def from_llm(content: str | None, brands: list[dict[str, Any]]) -> Analysis:
    """The LLM's answer as an Analysis; ValueError naming what is wrong with it."""
    try:
        data = json.loads(content or "")
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(data, dict) or set(data) != {"brands", "citations"}:
        raise ValueError("not an object with exactly brands and citations")
    names = [b["name"] for b in brands]
    given: dict[str, Mention] = {}
    if not isinstance(data["brands"], list):
        raise ValueError("brands: not a list")
    for i, item in enumerate(data["brands"]):
        if not isinstance(item, dict) or item.get("name") not in names \
                or item["name"] in given:
            raise ValueError(f"brands[{i}]: not one tracked brand, once")
        mentioned, position, score = (item.get("mentioned"), item.get("position"),
                                      item.get("sentiment"))
        if not isinstance(mentioned, bool):
            raise ValueError(f"brands[{i}].mentioned: not a boolean")
        if mentioned:
            if isinstance(position, bool) or not isinstance(position, int) \
                    or not 1 <= position <= len(names):
                raise ValueError(f"brands[{i}].position: not a rank from 1")
            if isinstance(score, bool) or not isinstance(score, int | float) \
                    or not -1 <= score <= 1:
                raise ValueError(f"brands[{i}].sentiment: not a number from -1 to 1")
            given[item["name"]] = Mention(item["name"], True, position, None,
                                          round(float(score), 4))
        else:
            given[item["name"]] = Mention(item["name"], False)
    ranks = sorted(m.position for m in given.values() if m.mentioned)
    if ranks != list(range(1, len(ranks) + 1)):
        raise ValueError("brands: positions are not 1..n")
    urls = data["citations"]
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ValueError("citations: not a list of URLs")
    cited = citations("\n".join(urls))
    return Analysis("llm", [given.get(n, Mention(n, False)) for n in names], cited)


# -- storing ----------------------------------------------------------------------------------

def _params(job_id: int, source: dict, analysis: Analysis) -> dict:
    m = analysis.mentions
    return {"job_id": job_id, "campaign_id": source["campaign_id"],
            "platform": source["platform"], "day": source["day"], "method": analysis.method,
            "brands": [x.brand for x in m], "mentioned": [x.mentioned for x in m],
            "positions": [x.position for x in m], "offsets": [x.offset for x in m],
            "sentiments": [x.sentiment for x in m],
            "urls": [u for u, _ in analysis.citations],
            "domains": [d for _, d in analysis.citations]}


STEPS = ("campaign_mentions_insert", "campaign_citations_insert", "campaign_daily_add",
         "campaign_domains_add")


async def record(conn, job_id: int, source: dict, analysis: Analysis) -> bool:
    """Store an answer's analysis and add it to the rollup, in one transaction; False (and
    nothing added) when the answer was analysed already."""
    params = _params(job_id, source, analysis)
    async with conn.transaction():
        cur = await conn.execute(q("campaign_answer_insert"), params)
        if await cur.fetchone() is None:
            return False
        for step in STEPS:
            await conn.execute(q(step), params)
    return True


def answer_text(result: Any) -> str:
    if isinstance(result, dict) and isinstance(result.get("text"), str):
        return result["text"]
    return ""


async def extract_task(payload, ctx):
    """payload {"campaign_id", "answer"}: analyse the answer job's text (after it ended)."""
    if not isinstance(payload, dict) or not all(
            isinstance(payload.get(k), int) and not isinstance(payload.get(k), bool)
            for k in ("campaign_id", "answer")):
        raise Permanent("payload: campaign_id and answer must be job/campaign ids")
    job_id = payload["answer"]
    # The worker's own connection, borrowed for the statements only (never across the LLM
    # call, whose limiter borrows it too): the process stays within its three connections.
    async with ctx.connection() as conn:
        cur = await conn.cursor(row_factory=dict_row).execute(
            q("campaign_answer_source"), {"job_id": job_id, "campaign_id": payload["campaign_id"]})
        source = await cur.fetchone()
    if source is None:
        return {"skipped": "the answer or the campaign is gone"}
    if source["state"] != "succeeded":
        return {"skipped": f"the answer ended {source['state']}"}
    text = answer_text(source["result"])
    analysis = None
    platform = (source["extract"] or {}).get("platform")
    if platform:
        analysis = await _ask_llm(ctx, platform, text, source["brands"])
    if analysis is None:
        analysis = analyse(text, source["brands"])
    async with ctx.connection() as conn:
        added = await record(conn, job_id, source, analysis)
    return analysis.summary() | {"added": added}


async def _ask_llm(ctx, platform: str, text: str, brands: list[dict]) -> Analysis | None:
    """The LLM's analysis, or None (logged) when its answer is not valid: the caller falls
    back to the deterministic pass. Provider errors raise (the job is retried)."""
    answer = await ctx.llm(platform).chat.completions.create(**llm_request(text, brands))
    content = answer.choices[0].message.content if answer.choices else None
    try:
        return from_llm(content, brands)
    except ValueError as exc:
        log.warning("campaign_extract_llm_invalid", job_id=ctx.job_id, problem=str(exc))
        return None
