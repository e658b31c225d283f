"""A Claude Messages API simulator on loopback, for tests and the local stack.

    from local.simulator import Simulator, Fault, Latency

    with Simulator(latency=Latency(ttft=0.2, tokens_per_second=50)).start() as sim:
        sim.script(Fault.status(429, retry_after=1), Fault.stream_error(after_deltas=2))
        client = anthropic.Anthropic(base_url=sim.url, api_key="test")
        ...
        assert sim.message_requests()[0].status == 429

It serves ``POST /v1/messages`` (JSON and SSE), ``/v1/messages/count_tokens``, Message Batches, and a
``/_sim/`` admin API for control from another process (see ``local.simulator.admin``).
"""

from local.simulator.config import DEFAULT_MODELS, Latency, SimConfig
from local.simulator.faults import Fault
from local.simulator.recording import RecordedRequest
from local.simulator.simulator import Simulator

__all__ = ["DEFAULT_MODELS", "Fault", "Latency", "RecordedRequest", "SimConfig", "Simulator"]
