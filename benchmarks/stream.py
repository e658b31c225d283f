"""What POST /stream adds between the model and the caller: time to first byte and delta pacing.

Run with `make bench` (all entries) or `python -m benchmarks.stream [-n REQUESTS]`. Numbers are
measured, never asserted in tests.

The simulator answers with a latency model (default: 0.3 s to the first token, then 100 tokens/s,
100-token replies). Two sequential series against it:

- direct: the anthropic SDK streaming straight from the simulator. Its first-delta time and the
  gaps between its deltas are the simulator's own, the floor nobody can beat.
- via /stream: an HTTP client reading the server-sent events of the stream function (uvicorn on
  loopback -> ClaudeClient -> simulator; DynamoDB is moto on loopback).

Reported: issue 15's two figures, the first byte at the client after upstream's first text (the
client's first delta, minus the time until the simulator received the upstream call, minus how long
the direct SDK takes from that moment to its first text (p50): what we add once the model speaks,
the admission round trip excluded) and the p95 gap between deltas at
the client minus the simulator's own p95 gap (buffering or jitter we introduce); beside them, time
to first byte minus the simulator's ttft (everything we add, admission included) and the same
against the direct series.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LAYER = ROOT / "layers" / "claude"
if str(LAYER) not in sys.path:  # in Lambda the layer is /opt/python; here it is this folder
    sys.path.insert(0, str(LAYER))

API_KEY = "sk-bench"
PROMPT = "Explain in a few paragraphs why response streaming lowers perceived latency."
REQUESTS = 15
BASELINE_REQUESTS = 5
TTFT = 0.3
TOKENS_PER_SECOND = 100.0
REPLY_TOKENS = 100
REQUEST_TIMEOUT = 30.0  # one request, seconds
BUDGET_SECONDS = 240.0  # the whole benchmark stops taking samples after this


@dataclass
class Sample:
    first: float  # seconds from sending the request to the first text delta
    gaps: list[float] = field(default_factory=list)  # seconds between consecutive deltas
    admission: float | None = None  # seconds from sending to the simulator receiving the upstream call


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


@contextlib.contextmanager
def _environment() -> Iterator[tuple[Any, str]]:
    """Simulator + moto + the stream app under uvicorn; the process environment restored afterwards."""
    from benchmarks.env import bench_environment
    from local.serve import serve_in_thread
    from local.simulator import Latency, Simulator

    with (
        Simulator(api_key=API_KEY, latency=Latency(TTFT, TOKENS_PER_SECOND), reply_tokens=REPLY_TOKENS) as sim,
        bench_environment(sim),
    ):
        from functions.stream.app import app

        with serve_in_thread(app) as url:
            yield sim, url


def _direct(sim: Any) -> Sample:
    """The simulator's own pacing, seen by the SDK with nothing in between."""
    import anthropic

    sdk = anthropic.Anthropic(base_url=sim.url, api_key=API_KEY, max_retries=0, timeout=REQUEST_TIMEOUT)
    sent_wall, started = time.time(), time.monotonic()
    times: list[float] = []
    with sdk.messages.create(
        model="claude-sonnet-5-5",
        max_tokens=1024,
        stream=True,
        messages=[{"role": "user", "content": PROMPT}],
    ) as events:
        for event in events:
            if event.type == "content_block_delta":
                times.append(time.monotonic())
    return Sample(
        first=times[0] - started,
        gaps=[b - a for a, b in itertools.pairwise(times)],
        admission=sim.message_requests()[-1].time - sent_wall,
    )


def _via_stream(sim: Any, url: str, index: int) -> Sample:
    """One POST /stream read incrementally, as a browser would, timing each delta's arrival."""
    import httpx2

    context = json.dumps({"requestId": f"bench-{index}", "authorizer": {"claims": {"sub": "bench-user"}}})
    headers = {"content-type": "application/json", "x-amzn-request-context": context}
    times: list[float] = []
    with httpx2.Client(timeout=REQUEST_TIMEOUT) as http:
        sent_wall, started = time.time(), time.monotonic()
        with http.stream("POST", f"{url}/stream", json={"prompt": PROMPT}, headers=headers) as response:
            if response.status_code != 200:
                raise RuntimeError(f"/stream answered {response.status_code}: {response.read()[:200]!r}")
            event = ""
            for line in response.iter_lines():
                if line.startswith("event:"):
                    event = line.partition(":")[2].strip()
                elif line == "" and event:
                    if event == "delta":
                        times.append(time.monotonic())
                    elif event == "error":
                        raise RuntimeError("/stream sent an error event")
                    event = ""
    upstream = sim.message_requests()[-1]
    return Sample(
        first=times[0] - started,
        gaps=[b - a for a, b in itertools.pairwise(times)],
        admission=upstream.time - sent_wall,
    )


def run(requests: int = REQUESTS, baseline_requests: int = BASELINE_REQUESTS) -> dict[str, Any]:
    stop_at = time.monotonic() + BUDGET_SECONDS
    with _environment() as (sim, url), contextlib.redirect_stdout(io.StringIO()):  # EMF lines go to stdout
        cold = _via_stream(sim, url, 0)  # the first call builds the client and fetches the key
        direct = [_direct(sim) for _ in range(baseline_requests) if time.monotonic() < stop_at]
        streamed = [_via_stream(sim, url, i + 1) for i in range(requests) if time.monotonic() < stop_at]

    first_direct = [s.first for s in direct]
    first_stream = [s.first for s in streamed]
    gaps_direct = [g for s in direct for g in s.gaps]
    gaps_stream = [g for s in streamed for g in s.gaps]
    admission = [s.admission for s in streamed if s.admission is not None]
    # From the simulator receiving the call to the SDK holding the first text, with nothing between.
    upstream_text = _percentile([s.first - s.admission for s in direct if s.admission is not None], 50)
    after_text = [s.first - s.admission - upstream_text for s in streamed if s.admission is not None]
    results: dict[str, Any] = {
        "requests": len(streamed),
        "sim_ttft_ms": _ms(TTFT),
        "sim_tokens_per_second": TOKENS_PER_SECOND,
        "reply_tokens": REPLY_TOKENS,
        "cold_ttfb_ms": _ms(cold.first),
        "ttfb_ms_p50": _ms(_percentile(first_stream, 50)),
        "ttfb_ms_p95": _ms(_percentile(first_stream, 95)),
        "ttfb_minus_sim_ttft_ms_p50": _ms(_percentile(first_stream, 50) - TTFT),
        "ttfb_minus_sim_ttft_ms_p95": _ms(_percentile(first_stream, 95) - TTFT),
        "ttfb_minus_direct_ms_p50": _ms(_percentile(first_stream, 50) - _percentile(first_direct, 50)),
        "admission_ms_p50": _ms(_percentile(admission, 50)),
        "first_byte_after_upstream_text_ms_p50": _ms(_percentile(after_text, 50)),
        "first_byte_after_upstream_text_ms_p95": _ms(_percentile(after_text, 95)),
        "first_byte_target_ms": 10.0,
        "direct_first_delta_ms_p50": _ms(_percentile(first_direct, 50)),
        "gap_ms_p50": _ms(_percentile(gaps_stream, 50)),
        "gap_ms_p95": _ms(_percentile(gaps_stream, 95)),
        "gap_ms_max": _ms(max(gaps_stream, default=float("nan"))),
        "sim_gap_ms_p50": _ms(_percentile(gaps_direct, 50)),
        "sim_gap_ms_p95": _ms(_percentile(gaps_direct, 95)),
        "gap_added_ms_p95": _ms(_percentile(gaps_stream, 95) - _percentile(gaps_direct, 95)),
        "gap_added_target_ms": 1.0,
    }
    _print_table(results, len(direct))
    return results


def _print_table(r: dict[str, Any], baseline: int) -> None:
    print(
        f"POST /stream over the simulator (ttft {r['sim_ttft_ms']:.0f} ms, {r['sim_tokens_per_second']:.0f} tok/s, "
        f"{r['reply_tokens']}-token replies; {r['requests']} requests via /stream, {baseline} direct)"
    )
    rows = [
        ("time to first delta, p50", r["direct_first_delta_ms_p50"], r["ttfb_ms_p50"]),
        ("inter-delta gap, p50", r["sim_gap_ms_p50"], r["gap_ms_p50"]),
        ("inter-delta gap, p95", r["sim_gap_ms_p95"], r["gap_ms_p95"]),
    ]
    print(f"  {'':28} {'direct SDK':>12} {'via /stream':>12} {'added':>10}")
    for name, direct, streamed in rows:
        print(f"  {name:28} {direct:>9.1f} ms {streamed:>9.1f} ms {streamed - direct:>7.1f} ms")
    print(
        f"  first byte after upstream's first text: p50 {r['first_byte_after_upstream_text_ms_p50']:.1f} ms, "
        f"p95 {r['first_byte_after_upstream_text_ms_p95']:.1f} ms (target <= {r['first_byte_target_ms']:.0f} ms); "
        f"delta gap added p95 {r['gap_added_ms_p95']:.1f} ms (target <= {r['gap_added_target_ms']:.0f} ms)"
    )
    print(
        f"  TTFB - simulator ttft: p50 {r['ttfb_minus_sim_ttft_ms_p50']:.1f} ms, "
        f"p95 {r['ttfb_minus_sim_ttft_ms_p95']:.1f} ms (of which before the upstream call, p50 "
        f"{r['admission_ms_p50']:.1f} ms); cold first request {r['cold_ttfb_ms']:.1f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-n", "--requests", type=int, default=REQUESTS, help="requests through /stream")
    parser.add_argument("--baseline", type=int, default=BASELINE_REQUESTS, help="direct SDK requests")
    args = parser.parse_args()
    run(max(1, args.requests), max(1, args.baseline))
    return 0


if __name__ == "__main__":
    sys.exit(main())
