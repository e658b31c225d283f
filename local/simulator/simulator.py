"""The public face of the simulator: start/stop, script faults, configure, inspect requests."""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any

from local.simulator.batches import BatchStore
from local.simulator.config import DEFAULT_MIN_CACHE_TOKENS, DEFAULT_MODELS, Latency, SimConfig
from local.simulator.faults import Fault, FaultQueue
from local.simulator.recording import RecordedRequest, RequestLog
from local.simulator.usage import PromptCache


class _Unset(enum.Enum):
    TOKEN = 0


UNSET = _Unset.TOKEN
"""Default of :meth:`Simulator.configure` arguments: leave that setting as it is."""

MESSAGES_PATH = "/v1/messages"


class Simulator:
    """A Claude Messages API simulator serving real HTTP on loopback, in a background thread.

    >>> with Simulator().start() as sim:
    ...     client = anthropic.Anthropic(base_url=sim.url, api_key="test")

    ``clock`` (seconds, monotonic) drives cache TTLs and batch delays; :meth:`advance` moves it on.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        latency: Latency | None = None,
        api_key: str | None = None,
        *,
        models: Iterable[str] | None = None,
        strict_models: bool = False,
        reply_tokens: int | None = None,
        batch_delay: float = 0.0,
        fail_rate: float = 0.0,
        fail_status: int = 529,
        seed: int = 0,
        min_cache_tokens: Mapping[str, int] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._host = host
        self._port = port
        self._defaults = SimConfig(
            latency=latency or Latency(),
            api_key=api_key,
            fail_rate=fail_rate,
            fail_status=fail_status,
            seed=seed,
            reply_tokens=reply_tokens,
            batch_delay=batch_delay,
            models=frozenset(models) if models is not None else DEFAULT_MODELS,
            strict_models=strict_models,
            min_cache_tokens=dict(min_cache_tokens or DEFAULT_MIN_CACHE_TOKENS),
        )
        self._config = self._defaults.copy()
        self._lock = threading.Lock()
        self._clock = clock or time.monotonic
        self._offset = 0.0
        self.faults = FaultQueue()
        self.faults.set_random(fail_rate, fail_status, seed)
        self.log = RequestLog()
        self.cache = PromptCache(self.now)
        self.batches = BatchStore(self.now)
        self.stopping = threading.Event()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Simulator:
        """Bind and serve in a daemon thread; returns self. ``port=0`` picks a free port."""
        from local.simulator.server import SimulatorHTTPServer

        if self._server is not None:
            return self
        self.stopping.clear()
        self._server = SimulatorHTTPServer((self._host, self._port), self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"claude-simulator:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, waking any hanging or slow request and closing open connections."""
        server, self._server = self._server, None
        if server is None:
            return
        self.stopping.set()
        server.shutdown()
        server.close_connections()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_forever(self) -> None:
        """Start and block until :meth:`stop` is called (from a signal handler, say)."""
        self.start()
        self.stopping.wait()

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("simulator is not running")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL for the SDK, e.g. ``http://127.0.0.1:54321``."""
        return f"http://{self._host}:{self.port}"

    # --- time ------------------------------------------------------------------------------------

    def now(self) -> float:
        """The simulator clock: the injected clock plus everything :meth:`advance` added."""
        with self._lock:
            offset = self._offset
        return self._clock() + offset

    def advance(self, seconds: float) -> None:
        """Move the simulator clock forward (expire cache entries, finish delayed batches)."""
        with self._lock:
            self._offset += seconds

    # --- behaviour -------------------------------------------------------------------------------

    def script(self, *faults: Fault) -> None:
        """Queue faults, consumed FIFO, one per ``/v1/messages`` request or batch create."""
        self.faults.extend(faults)

    @property
    def config(self) -> SimConfig:
        with self._lock:
            return self._config.copy()

    def configure(
        self,
        *,
        latency: Latency | _Unset = UNSET,
        fail_rate: float | _Unset = UNSET,
        fail_status: int | _Unset = UNSET,
        seed: int | _Unset = UNSET,
        reply_tokens: int | _Unset | None = UNSET,
        batch_delay: float | _Unset = UNSET,
        api_key: str | _Unset | None = UNSET,
        models: Iterable[str] | _Unset = UNSET,
        strict_models: bool | _Unset = UNSET,
        min_cache_tokens: Mapping[str, int] | _Unset = UNSET,
    ) -> SimConfig:
        """Change settings; arguments left out keep their value. Returns the new settings.

        ``reply_tokens`` fixes the length of plain-text replies (None: derived from the prompt);
        ``fail_rate`` fails that share of requests (with no scripted fault) with ``fail_status``,
        using an RNG seeded with ``seed`` (re-seeded whenever ``seed`` is given).
        """
        with self._lock:
            config = self._config
            if not isinstance(latency, _Unset):
                config.latency = latency
            if not isinstance(fail_rate, _Unset):
                if not 0.0 <= fail_rate <= 1.0:
                    raise ValueError("fail_rate must be between 0 and 1")
                config.fail_rate = fail_rate
            if not isinstance(fail_status, _Unset):
                config.fail_status = fail_status
            if not isinstance(seed, _Unset):
                config.seed = seed
            if not isinstance(reply_tokens, _Unset):
                config.reply_tokens = reply_tokens
            if not isinstance(batch_delay, _Unset):
                config.batch_delay = batch_delay
            if not isinstance(api_key, _Unset):
                config.api_key = api_key
            if not isinstance(models, _Unset):
                config.models = frozenset(models)
            if not isinstance(strict_models, _Unset):
                config.strict_models = strict_models
            if not isinstance(min_cache_tokens, _Unset):
                config.min_cache_tokens = dict(min_cache_tokens)
            self.faults.set_random(config.fail_rate, config.fail_status, None if isinstance(seed, _Unset) else seed)
            return config.copy()

    def reset(self) -> None:
        """Forget faults, recorded requests, cache, batches and clock offset; restore the settings
        the simulator was constructed with."""
        with self._lock:
            self._config = self._defaults.copy()
            self._offset = 0.0
        self.faults.clear()
        self.faults.set_random(self._defaults.fail_rate, self._defaults.fail_status, self._defaults.seed)
        self.log.clear()
        self.cache.clear()
        self.batches.clear()

    # --- observation -----------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (copies), oldest first."""
        return self.log.snapshot()

    def message_requests(self) -> list[RecordedRequest]:
        """Only ``POST /v1/messages`` requests."""
        return [r for r in self.requests if r.method == "POST" and r.path == MESSAGES_PATH]
