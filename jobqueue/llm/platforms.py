"""Platforms: OpenAI-compatible providers named in `jobqueue.toml`.

    [platforms.openai]
    base_url = "https://api.openai.com/v1"
    model = "gpt-4.1-mini"
    fallback_model = "gpt-4.1-nano"
    api_key_env = ["OPENAI_API_KEY", "OPENAI_API_KEY_2"]
    rpm = 500
    tpm = 200000

Keys come only from the environment variables the file names: never from the file, never
logged, never stored in job rows. A key is known elsewhere by its `key_id`: the variable's name
and a short hash of the key, so two hosts with different keys under one name stay apart.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobqueue import config
from jobqueue.errors import ConfigError as ConfigError
from jobqueue.settings import MAX_SECONDS


@dataclass(frozen=True)
class ApiKey:
    env: str
    secret: str = field(repr=False)

    @property
    def key_id(self) -> str:
        return f"{self.env}:{hashlib.sha256(self.secret.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class Platform:
    name: str
    base_url: str
    model: str
    api_key_env: tuple[str, ...]
    fallback_model: str | None = None
    rpm: int = 500
    tpm: int = 200_000
    fallback_rpm: int | None = None  # default: the main model's limits
    fallback_tpm: int | None = None
    concurrency: int = 50
    max_attempts: int = 5
    timeout: float = 20.0  # per call; keep it under the worker's grace period
    # The fallback answers only while the provider itself limits the main model (a 429, or
    # headers saying nothing is left), and then only when waiting for the main model would
    # take longer than this: never because of our own backlog.
    latency_budget: float = 10.0
    # "model": the provider gives each model its own budget on a key (OpenAI); "key": every
    # model on a key draws from one budget. A 429 naming no model, or another, teaches "key".
    limit_scope: str = "model"
    burst_seconds: float = 3.0
    max_tokens: int = 512  # default when a job gives none
    cache_ttl: float = 86_400.0
    max_429_retries: int = 5  # 429s absorbed within one attempt before it counts as failed
    embedding_model: str = "text-embedding-3-small"  # the `embed` kind's default model
    embed_batch: int = 256  # inputs per embeddings call (also held under the token bucket)
    # The provider's Batch API (batch submit --via batch-api; jobqueue/llm/batchapi.py): its
    # limits per input file, and how often a provider batch is polled (the first poll after
    # batch_poll_seconds, then twice as long each time, up to batch_poll_max_seconds).
    batch_max_requests: int = 50_000
    batch_max_file_bytes: int = 200 * 1024 * 1024
    batch_poll_seconds: float = 30.0
    batch_poll_max_seconds: float = 600.0

    def limits(self, model: str) -> tuple[int, int]:
        if model == self.fallback_model and model != self.model:
            return self.fallback_rpm or self.rpm, self.fallback_tpm or self.tpm
        return self.rpm, self.tpm

    def keys(self, environ: dict[str, str] | None = None) -> list[ApiKey]:
        """The keys from the environment; a missing variable is a ConfigError naming it."""
        environ = os.environ if environ is None else environ
        missing = [name for name in self.api_key_env if not environ.get(name)]
        if missing:
            raise ConfigError(
                f"platform {self.name}: environment variable(s) {', '.join(missing)} "
                "not set (api_key_env names where the keys are)")
        return [ApiKey(name, environ[name]) for name in self.api_key_env]


_INT_FIELDS = {"rpm", "tpm", "fallback_rpm", "fallback_tpm", "concurrency", "max_attempts",
               "max_tokens", "max_429_retries", "embed_batch", "batch_max_requests",
               "batch_max_file_bytes"}
_FLOAT_FIELDS = {"timeout", "latency_budget", "burst_seconds", "cache_ttl", "batch_poll_seconds",
                 "batch_poll_max_seconds"}
_STR_FIELDS = {"base_url", "model", "fallback_model", "embedding_model"}
_SCOPES = ("model", "key")
_REQUIRED = ("base_url", "model", "api_key_env")


def config_path() -> Path:
    return config.config_path()


def load(path: Path | str | None = None) -> dict[str, Platform]:
    """The platforms of a config file (default: see jobqueue/config.py). Parsed once per
    version of the file, so a web process asking on every request pays a stat, and an edit is
    still seen."""
    return config.load(parse, path)


def parse(data: dict[str, Any], source: str = "config") -> dict[str, Platform]:
    platforms = data.get("platforms")
    if not isinstance(platforms, dict) or not platforms:
        raise ConfigError(f"{source}: no [platforms.NAME] table")
    return {name: _platform(name, table, source) for name, table in platforms.items()}


def _platform(name: str, table: Any, source: str) -> Platform:
    where = f"{source}: platforms.{name}"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    if "api_key" in table or "key" in table:
        raise ConfigError(f"{where}: keys never go in the file; name their variables in "
                          "api_key_env")
    known = set(Platform.__dataclass_fields__) - {"name"}
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}.{key}: unknown field (known: {', '.join(sorted(known))})")
    for key in _REQUIRED:
        if key not in table:
            raise ConfigError(f"{where}.{key}: required")
    values: dict[str, Any] = {}
    for key, value in table.items():
        field_where = f"{where}.{key}"
        if key == "api_key_env":
            names = [value] if isinstance(value, str) else value
            if (not isinstance(names, list) or not names
                    or not all(isinstance(n, str) and n for n in names)):
                raise ConfigError(f"{field_where}: must be a variable name or a list of them")
            if len(set(names)) != len(names):
                raise ConfigError(f"{field_where}: lists a variable twice")
            values[key] = tuple(names)
        elif key in _INT_FIELDS:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{field_where}: must be a positive integer, got {value!r}")
            values[key] = value
        elif key in _FLOAT_FIELDS:  # seconds: NaN fails the comparison, infinity the bound
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0 < value <= MAX_SECONDS:
                raise ConfigError(f"{field_where}: must be a positive number (at most "
                                  f"{MAX_SECONDS:g}), got {value!r}")
            values[key] = float(value)
        elif key in _STR_FIELDS:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{field_where}: must be a non-empty string, got {value!r}")
            values[key] = value
        elif key == "limit_scope":
            if value not in _SCOPES:
                raise ConfigError(f"{field_where}: must be one of {', '.join(_SCOPES)}, "
                                  f"got {value!r}")
            values[key] = value
    if not values["base_url"].startswith(("http://", "https://")):
        raise ConfigError(f"{where}.base_url: must start with http:// or https://")
    return Platform(name=name, **values)
