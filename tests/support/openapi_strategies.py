"""Hypothesis strategies from the JSON Schemas of /api/openapi.json: values the document says
are valid (for "the server accepts what it documents"), and hostile ones (for "no input
reaches a 5xx").

Written for the subset pydantic emits for web/schemas.py ($ref, anyOf, oneOf, enum, const,
type, bounds, lengths, pattern, items, properties, required, additionalProperties, format
date-time and binary). hypothesis-jsonschema would do this in general, but its 0.23 does not
run with the Hypothesis we use.
"""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import strategies as st

# Text a client may send: no NUL (refused by design), no surrogates (not UTF-8).
CLEAN_CHARS = st.characters(exclude_categories=("Cs",), exclude_characters="\x00")
CLEAN_TEXT = st.text(CLEAN_CHARS, max_size=12)
CLEAN_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**18), 10**18)
    | st.floats(allow_nan=False, allow_infinity=False) | CLEAN_TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(CLEAN_TEXT, inner, max_size=3),
    max_leaves=8)
ZONES = st.builds(lambda minutes: timezone(timedelta(minutes=minutes)),
                  st.integers(-14 * 60, 14 * 60))
DATE_TIMES = st.datetimes(datetime(1971, 1, 1), datetime(2200, 1, 1),
                          timezones=st.just(UTC) | ZONES).map(datetime.isoformat)


class Schemas:
    """Strategies for the schemas of one OpenAPI document."""

    def __init__(self, document: dict):
        self.document = document

    def resolve(self, schema: dict) -> dict:
        while "$ref" in schema:
            node = self.document
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node[part]
            schema = node
        return schema

    def valid(self, schema: dict) -> st.SearchStrategy:
        schema = self.resolve(schema)
        if "anyOf" in schema and "type" not in schema and "properties" not in schema:
            return st.one_of([self.valid(s) for s in schema["anyOf"]])
        if "enum" in schema:
            return st.sampled_from(schema["enum"])
        if "const" in schema:
            return st.just(schema["const"])
        kind = schema.get("type")
        if isinstance(kind, list):
            return st.one_of([self.valid(schema | {"type": k}) for k in kind])
        strategy = {"null": lambda s: st.none(), "boolean": lambda s: st.booleans(),
                    "integer": self._integer, "number": self._number,
                    "string": self._string, "array": self._array,
                    "object": self._object}.get(kind, lambda s: CLEAN_JSON)(schema)
        if kind == "object" and {"oneOf", "anyOf", "not"} & set(schema):
            one_of, any_of = schema.get("oneOf"), schema.get("anyOf")
            never = schema.get("not")
            strategy = strategy.filter(
                lambda v: (one_of is None or sum(self.matches(b, v) for b in one_of) == 1)
                and (any_of is None or any(self.matches(b, v) for b in any_of))
                and (never is None or not self.matches(never, v)))
        return strategy

    @staticmethod
    def _bounds(s: dict) -> tuple:
        """(lowest integer, highest integer) the bounds allow; None: unbounded."""
        lo = hi = None
        if "minimum" in s:
            lo = math.ceil(s["minimum"])
        elif "exclusiveMinimum" in s:
            lo = math.floor(s["exclusiveMinimum"]) + 1
        if "maximum" in s:
            hi = math.floor(s["maximum"])
        elif "exclusiveMaximum" in s:
            hi = math.ceil(s["exclusiveMaximum"]) - 1
        return lo, hi

    def _integer(self, s: dict):
        return st.integers(*self._bounds(s))

    def _number(self, s: dict):
        lo = s.get("minimum", s.get("exclusiveMinimum"))
        hi = s.get("maximum", s.get("exclusiveMaximum"))
        floats = st.floats(lo, hi, allow_nan=False, allow_infinity=False,
                           exclude_min="exclusiveMinimum" in s,
                           exclude_max="exclusiveMaximum" in s)
        return floats | st.integers(*self._bounds(s))

    def _string(self, s: dict):
        if s.get("format") == "date-time":
            return DATE_TIMES
        if s.get("format") == "binary":
            return st.binary(max_size=64)
        lo = s.get("minLength", 0)
        hi = min(s.get("maxLength", lo + 12), lo + 12)
        text = st.text(CLEAN_CHARS, min_size=lo, max_size=hi)
        if "pattern" in s:
            pattern = re.compile(s["pattern"])
            text = text.filter(lambda t: pattern.search(t) is not None)
        return text

    def _array(self, s: dict):
        lo = s.get("minItems", 0)
        return st.lists(self.valid(s.get("items", {})), min_size=lo,
                        max_size=min(s.get("maxItems", lo + 3), lo + 3))

    def _object(self, s: dict):
        props = s.get("properties")
        if not props:
            return st.dictionaries(CLEAN_TEXT, CLEAN_JSON, max_size=3)
        required = set(s.get("required", []))
        return st.fixed_dictionaries(
            {k: self.valid(v) for k, v in props.items() if k in required},
            optional={k: self.valid(v) for k, v in props.items() if k not in required})

    def matches(self, schema: dict, value) -> bool:
        """A small validator for the branch schemas of oneOf/anyOf (required, type, const,
        minItems, properties)."""
        schema = self.resolve(schema)
        if "const" in schema and value != schema["const"]:
            return False
        kinds = schema.get("type")
        if kinds is not None:
            kinds = kinds if isinstance(kinds, list) else [kinds]
            types = {"string": str, "array": list, "object": dict, "null": type(None),
                     "boolean": bool, "integer": int, "number": (int, float)}
            if not any(isinstance(value, types[k]) for k in kinds):
                return False
        if isinstance(value, list) and len(value) < schema.get("minItems", 0):
            return False
        if isinstance(value, dict):
            if not set(schema.get("required", [])) <= set(value):
                return False
            return all(self.matches(sub, value[k]) for k, sub in
                       schema.get("properties", {}).items() if k in value)
        return True

    def request_schema(self, path: str, method: str, content: str = "application/json"):
        op = self.document["paths"][path][method]
        return op["requestBody"]["content"][content]["schema"]


# -- hostile values -------------------------------------------------------------------------

# Raw JSON tokens Python's json.dumps would not write (or would write differently): each is
# put in a body as a placeholder string, then swapped in the encoded text.
RAW_TOKENS = {
    "nul": '"a\\u0000b"', "lone_surrogate": '"x\\ud800y"', "low_surrogate": '"\\udc00"',
    "big_exponent": "1e400", "nan": "NaN", "infinity": "Infinity", "minus_infinity":
    "-Infinity", "huge_int": "9" * 5000, "deep": "[" * 10_000 + "]" * 10_000,
    "deep_object": '{"a":' * 3000 + "1" + "}" * 3000, "big_negative": "-" + "9" * 30,
    "long_text": json.dumps("q" * 5000), "bool": "true", "list": '["a", "b"]',
    "object": '{"a": 1}', "null": "null", "empty": '""', "spaces": '"   "',
    "float_int": "3.0", "negative": "-1", "zero": "0", "int64_over": str(2**63),
    "int32_over": str(2**31), "int70": str(2**70), "crlf": '"a\\r\\nb"',
    "nul_key": '{"a\\u0000": 1}', "nested_nul": '{"a": ["\\u0000"]}',
}


def hostile_token() -> st.SearchStrategy[str]:
    return st.sampled_from(sorted(RAW_TOKENS))


def with_token(body: dict, path: list, token: str) -> bytes:
    """`body` encoded with the value at `path` (keys and indexes) replaced by a raw token."""
    marker = "@@HOSTILE@@"
    node = body
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = marker
    return json.dumps(body).replace(json.dumps(marker), RAW_TOKENS[token]).encode()
