"""``python -m local.simulator --host 127.0.0.1 --port 8089 [--ttft 0.3 --tps 80]``: serve until
SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from local.simulator.config import Latency
from local.simulator.simulator import Simulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8089)
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds before the first token")
    parser.add_argument("--tps", type=float, default=0.0, help="output tokens per second (0: instant)")
    parser.add_argument("--api-key", default=None, help="require this key (401 for any other)")
    parser.add_argument("--reply-tokens", type=int, default=None, help="fixed plain-text reply length")
    parser.add_argument("--batch-delay", type=float, default=0.0, help="seconds before a batch ends")
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--fail-status", type=int, default=529)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--strict-models", action="store_true", help="only the known model IDs")
    args = parser.parse_args(argv)

    sim = Simulator(
        host=args.host,
        port=args.port,
        latency=Latency(ttft=args.ttft, tokens_per_second=args.tps),
        api_key=args.api_key,
        reply_tokens=args.reply_tokens,
        batch_delay=args.batch_delay,
        fail_rate=args.fail_rate,
        fail_status=args.fail_status,
        seed=args.seed,
        strict_models=args.strict_models,
    )

    def _stop(signum: int, frame: FrameType | None) -> None:
        sim.stopping.set()

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    sim.start()
    print(f"Claude API simulator listening on {sim.url}", flush=True)
    sim.stopping.wait()
    sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
