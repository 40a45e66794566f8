"""What the service takes and what it costs: the one place these facts are written.

Light enough for DAG parse time: the standard library only, the document read on first use.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping

DOCUMENT = Path(__file__).with_name("o3-mini.openapi.json")
"""AI/ML API's published OpenAPI document for o3-mini, as vendored (the team's copy is
``../shared/contract/o3-mini.openapi.json``; a test keeps the two equal)."""

OPERATION = ("/v1/chat/completions", "post")

REFUSED: Mapping[str, str] = {
    "temperature": "reasoning models sample at a fixed temperature; remove it",
    "top_p": "reasoning models sample at a fixed temperature; remove it",
    "presence_penalty": "reasoning models take no penalties; remove it",
    "frequency_penalty": "reasoning models take no penalties; remove it",
    "logprobs": "reasoning models return no log probabilities; remove it",
    "top_logprobs": "reasoning models return no log probabilities; remove it",
    "logit_bias": "reasoning models take no logit bias; remove it",
    "max_tokens": "use max_completion_tokens instead: it bounds hidden reasoning plus the visible reply",
    "parallel_tool_calls": "reasoning models do not take it; remove it",
}
"""Parameters o3-mini refuses (400 ``unsupported_parameter``) though the document or other OpenAI chat
models list them, with what to do instead."""

LIMITS: Mapping[str, Mapping[str, Any]] = {
    "model": {"enum": None},  # the service also takes dated snapshots, e.g. o3-mini-2025-01-31
    "messages": {"minItems": 1},
    "max_completion_tokens": {"maximum": 100_000},  # o3-mini's largest output, reasoning included
    "stop.1": {"maxItems": 4},
    "tools": {"maxItems": 128},
    "response_format.2.json_schema.name": {"pattern": "^[A-Za-z0-9_-]{1,64}$"},
}
"""What the document says only in words, written into its schema: a field's path (a number picks an
``anyOf``/``oneOf`` branch) and the keywords to set there (``None`` removes one)."""


@dataclass(frozen=True)
class Price:
    """Dollars per token, and when the figures were read.

    :param input: per prompt token not read from the service's prompt cache.
    :param cached_input: per prompt token read from that cache.
    :param output: per completion token, hidden reasoning included.
    """

    input: float
    cached_input: float
    output: float
    as_of: str

    def usd(self, prompt_tokens: float, cached_tokens: float, completion_tokens: float) -> float:
        """The cost of one call's tokens (``cached_tokens`` is the part of ``prompt_tokens`` cached)."""
        return (
            (prompt_tokens - cached_tokens) * self.input
            + cached_tokens * self.cached_input
            + completion_tokens * self.output
        )


LIST_PRICE = Price(input=1.43e-6, cached_input=0.715e-6, output=5.72e-6, as_of="2026-09")
"""AI/ML API's list price for o3-mini ($1.43 / $0.715 / $5.72 per million tokens), used where the
service reports no cost of its own."""

CREDITS_PER_USD = 2_000_000
"""AI/ML API's credits (``meta.usage.credits_used``) per dollar."""


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI document, read once."""
    loaded: dict[str, Any] = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    return loaded


@functools.cache
def request_schema() -> Mapping[str, Any]:
    """The request body's schema (OpenAPI 3.0 dialect: ``nullable``), with :data:`LIMITS` written in."""
    path, method = OPERATION
    body = document()["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    schema: dict[str, Any] = copy.deepcopy(body)
    for where, keywords in LIMITS.items():
        node = schema
        for step in where.split("."):
            node = (
                (node.get("oneOf") or node["anyOf"])[int(step)]
                if step.isdigit()
                else node["properties"][step]
            )
        for keyword, value in keywords.items():
            if value is None:
                node.pop(keyword, None)
            else:
                node[keyword] = value
    return schema
