"""The ``/_sim/`` admin API, so another process (e2e tests) can drive a simulator it did not start.

POST /_sim/faults    JSON list of fault specs (or {"faults": [...]}) appended to the queue
GET  /_sim/faults    faults still queued
POST /_sim/config    {"ttft", "tokens_per_second" (or "tps"), "latency": {...}, "fail_rate",
                      "fail_status", "seed", "reply_tokens", "batch_delay", "api_key",
                      "models", "strict_models", "min_cache_tokens"}; returns the settings
GET  /_sim/config    current settings
GET  /_sim/requests  recorded requests (``?path=/v1/messages`` filters)
POST /_sim/reset     back to the constructed state
POST /_sim/clock     {"advance": seconds}: move the cache/batch clock forward
GET  /_sim/health    {"ok": true}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from local.simulator.config import Latency
from local.simulator.faults import Fault

if TYPE_CHECKING:
    from local.simulator.simulator import Simulator

_CONFIG_KEYS = frozenset(
    {
        "latency",
        "ttft",
        "tokens_per_second",
        "tps",
        "fail_rate",
        "fail_status",
        "seed",
        "reply_tokens",
        "batch_delay",
        "api_key",
        "models",
        "strict_models",
        "min_cache_tokens",
    }
)


def _number(value: Any, name: str) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"{name} must be a number")


def _configure(sim: Simulator, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValueError("config must be a JSON object")
    unknown = set(body) - _CONFIG_KEYS
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
    kwargs: dict[str, Any] = {}
    latency = sim.config.latency
    if isinstance(body.get("latency"), dict):
        lat = body["latency"]
        latency = Latency(
            ttft=_number(lat.get("ttft", latency.ttft), "latency.ttft"),
            tokens_per_second=_number(
                lat.get("tokens_per_second", latency.tokens_per_second), "latency.tokens_per_second"
            ),
        )
        kwargs["latency"] = latency
    if "ttft" in body:
        latency = Latency(ttft=_number(body["ttft"], "ttft"), tokens_per_second=latency.tokens_per_second)
        kwargs["latency"] = latency
    for key in ("tokens_per_second", "tps"):
        if key in body:
            latency = Latency(ttft=latency.ttft, tokens_per_second=_number(body[key], key))
            kwargs["latency"] = latency
    for key in ("fail_rate", "batch_delay"):
        if key in body:
            kwargs[key] = _number(body[key], key)
    for key in ("fail_status", "seed"):
        if key in body:
            if not isinstance(body[key], int):
                raise ValueError(f"{key} must be an integer")
            kwargs[key] = body[key]
    if "reply_tokens" in body:
        if body["reply_tokens"] is not None and not isinstance(body["reply_tokens"], int):
            raise ValueError("reply_tokens must be an integer or null")
        kwargs["reply_tokens"] = body["reply_tokens"]
    if "api_key" in body:
        kwargs["api_key"] = body["api_key"]
    if "models" in body:
        kwargs["models"] = [str(m) for m in body["models"]]
    if "strict_models" in body:
        kwargs["strict_models"] = bool(body["strict_models"])
    if "min_cache_tokens" in body:
        kwargs["min_cache_tokens"] = {str(k): int(v) for k, v in dict(body["min_cache_tokens"]).items()}
    return sim.configure(**kwargs).to_dict()


def handle_admin(sim: Simulator, method: str, path: str, body: Any, query: str = "") -> tuple[int, Any]:
    """Answer one admin request: ``(status, JSON payload)``. Raises ``ValueError`` for bad input."""
    route = (method, path)
    if route == ("POST", "/_sim/faults"):
        specs = body.get("faults") if isinstance(body, dict) else body
        if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
            raise ValueError("expected a JSON list of fault specs")
        faults = [Fault.from_dict(spec) for spec in specs]
        sim.script(*faults)
        return 200, {"queued": len(faults), "pending": len(sim.faults.pending())}
    if route == ("GET", "/_sim/faults"):
        return 200, [fault.to_dict() for fault in sim.faults.pending()]
    if route == ("POST", "/_sim/config"):
        return 200, _configure(sim, body)
    if route == ("GET", "/_sim/config"):
        return 200, sim.config.to_dict()
    if route == ("GET", "/_sim/requests"):
        wanted = dict(p.split("=", 1) for p in query.split("&") if "=" in p).get("path")
        return 200, [r.to_dict() for r in sim.requests if wanted is None or r.path == wanted]
    if route == ("POST", "/_sim/reset"):
        sim.reset()
        return 200, {"reset": True}
    if route == ("POST", "/_sim/clock"):
        advance = _number((body or {}).get("advance", 0), "advance") if isinstance(body, dict | None) else 0.0
        sim.advance(advance)
        return 200, {"now": sim.now()}
    if route == ("GET", "/_sim/health"):
        return 200, {"ok": True}
    return 404, {"type": "error", "error": {"type": "not_found_error", "message": f"Not found: {method} {path}"}}
