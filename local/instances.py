"""Function instances as Lambda runs them: one process per instance, one invocation at a time each.

Lambda never hands two concurrent requests to one execution environment, so per-request state
(Powertools' Logger keys and correlation id, the resolver's `current_event`, module globals) is
never shared between requests. Threads in one process would share all of it, so each instance
here is a process of its own (spawned: a fresh interpreter that imports the function once, its
cold start). A pool starts one instance up front, adds one whenever every instance is busy (up
to `max_instances`, then requests wait their turn, as on a function at its concurrency limit),
and replaces an instance that crashed or ran past its timeout, as Lambda does.

    pool = FunctionPool("GenerateFunction", Path("functions/generate"), "handler", timeout=30)
    result = pool(event, context)  # context: anything with get_remaining_time_in_millis()

A function behind the Lambda Web Adapter (an ASGI app that run.sh serves) gets a WebAdapterPool:
each instance is a process running the app under uvicorn on a loopback port, ready once its
readiness path answers 200 (as LWA checks), and the shim proxies one request at a time to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import logging
import multiprocessing
import os
import queue
import signal
import socket
import threading
import time
import uuid
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
import uvicorn

log = logging.getLogger("local.instances")

DEFAULT_MAX_INSTANCES = int(os.environ.get("LOCAL_MAX_INSTANCES", "4"))
# How long a new instance may take to import its function (a cold start on a busy machine).
INIT_TIMEOUT_SECONDS = 120.0
# After the function's own timeout, how long before the instance is declared dead.
KILL_GRACE_SECONDS = 5.0


class InvocationFailed(RuntimeError):
    """The handler raised, or its instance crashed or timed out (Lambda: a failed invocation)."""


class HandlerRaised(InvocationFailed):
    """The handler raised; its instance is fine and serves the next request."""


class ContextLike(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


def _serve(conn: Connection, code_dir: str, module_name: str, handler_name: str, function: str) -> None:
    """An instance's whole life: import the function (init), then one invocation at a time."""
    from local.shim import LambdaContext, load_module  # in the child: the layer goes on sys.path

    # Ctrl-C reaches the whole process group; the stack stops its instances itself, in order.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        handler = getattr(load_module(Path(code_dir) / "app.py", module_name), handler_name)
    except BaseException as exc:
        log.exception("function %s failed to initialise", function)
        conn.send(("init_error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            event, timeout, request_id = conn.recv()
        except (EOFError, OSError):  # the pool closed: the environment shuts down
            return
        context = LambdaContext(function, timeout)
        context.aws_request_id = request_id
        try:
            result = handler(event, context)
        except Exception as exc:
            log.exception("function %s raised", function)
            conn.send(("error", type(exc).__name__))
        else:
            conn.send(("ok", result))


class _Process:
    """An instance's process and the pipe to it, started and through its init (its cold start)."""

    stop_grace = 2.0

    def __init__(self, function: str, index: int, target: Any, args: tuple[Any, ...]) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process: BaseProcess = ctx.Process(
            target=target, args=(child, *args), name=f"{function}-{index}", daemon=True
        )
        self.process.start()
        child.close()
        if not self.conn.poll(INIT_TIMEOUT_SECONDS):
            self.stop()
            raise InvocationFailed(f"{function} did not initialise in {INIT_TIMEOUT_SECONDS:.0f} s")
        status, self.init_detail = self.conn.recv()
        if status != "ready":
            self.stop()
            raise InvocationFailed(f"{function} failed to initialise: {self.init_detail}")

    def stop(self) -> None:
        self.conn.close()
        self.process.join(timeout=self.stop_grace)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout=2)


class Instance(_Process):
    """One execution environment: a process and the pipe to it."""

    def __init__(self, pool: FunctionPool, index: int) -> None:
        module = f"fn_{pool.function}_{index}"
        super().__init__(pool.function, index, _serve, (str(pool.code_dir), module, pool.handler_name, pool.function))

    def invoke(self, event: dict[str, Any], timeout: float, request_id: str) -> Any:
        self.conn.send((event, timeout, request_id))
        if not self.conn.poll(timeout + KILL_GRACE_SECONDS):
            raise InvocationFailed("the function timed out")
        status, value = self.conn.recv()
        if status != "ok":
            raise HandlerRaised(f"the function raised {value}")
        return value


class FunctionPool:
    """The instances of one function. Callable like a handler: `pool(event, context)`."""

    def __init__(
        self,
        function: str,
        code_dir: Path,
        handler_name: str,
        *,
        timeout: float,
        max_instances: int = DEFAULT_MAX_INSTANCES,
    ) -> None:
        self.function = function
        self.code_dir = code_dir
        self.handler_name = handler_name
        self.timeout = timeout
        self.max_instances = max(1, max_instances)
        self._idle: queue.LifoQueue[Instance] = queue.LifoQueue()  # warmest first, as Lambda reuses
        self._lock = threading.Lock()
        self._started = 0
        self._starting = 0  # instances being created right now (counted against max_instances)
        self._all: list[Instance] = []
        self._closed = False
        self._invoking = 0
        self.peak_invocations = 0  # the most invocations in progress at once (waiting ones included)

    @property
    def instances(self) -> int:
        return len(self._all)

    def start(self) -> FunctionPool:
        """Start the first instance now, so a broken function fails the stack's start, not a request."""
        self._idle.put(self._new())
        return self

    def _new(self) -> Instance:
        with self._lock:
            self._started += 1
            index = self._started
        instance = Instance(self, index)
        with self._lock:
            self._all.append(instance)
        return instance

    def _acquire(self) -> Instance:
        """An idle instance, else a new one while under the limit, else wait for one to come back."""
        while True:
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                pass
            with self._lock:
                grow = len(self._all) + self._starting < self.max_instances
                if grow:
                    self._starting += 1
            if grow:
                try:
                    return self._new()
                finally:
                    with self._lock:
                        self._starting -= 1
            try:  # bounded, so a discarded instance frees its slot for a waiter to grow into
                return self._idle.get(timeout=0.2)
            except queue.Empty:
                continue

    def _discard(self, instance: Instance) -> None:
        with self._lock:
            if instance in self._all:
                self._all.remove(instance)
        instance.stop()

    def __call__(self, event: dict[str, Any], context: ContextLike) -> Any:
        if self._closed:
            raise InvocationFailed("the function is shut down")
        with self._lock:
            self._invoking += 1
            self.peak_invocations = max(self.peak_invocations, self._invoking)
        try:
            return self._invoke(event, context)
        finally:
            with self._lock:
                self._invoking -= 1

    def _invoke(self, event: dict[str, Any], context: ContextLike) -> Any:
        timeout = max(0.001, context.get_remaining_time_in_millis() / 1000)
        request_id = str(getattr(context, "aws_request_id", "") or uuid.uuid4())
        instance = self._acquire()
        try:
            result = instance.invoke(event, timeout, request_id)
        except HandlerRaised:
            self._idle.put(instance)
            raise
        except InvocationFailed:  # timed out: Lambda stops the environment; the next call gets a fresh one
            self._discard(instance)
            raise
        except (EOFError, OSError, BrokenPipeError):
            self._discard(instance)
            raise InvocationFailed("the function's instance crashed") from None
        self._idle.put(instance)
        return result

    def stop(self) -> None:
        self._closed = True
        with self._lock:
            instances, self._all = list(self._all), []
        for instance in instances:
            instance.stop()


# ---- functions behind the Lambda Web Adapter -------------------------------------------------------


def _serve_web(conn: Connection, code_dir: str, module_name: str, function: str) -> None:
    """A web-adapter instance: the function's ASGI app under uvicorn, as run.sh starts it."""

    from local.shim import load_module

    try:
        app = load_module(Path(code_dir) / "app.py", module_name).app
    except BaseException as exc:
        log.exception("function %s failed to initialise", function)
        conn.send(("init_error", f"{type(exc).__name__}: {exc}"))
        return
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    # As run.sh starts it (--no-server-header); the shim in front adds Date, as API Gateway does.
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", server_header=False, date_header=False)
    )

    def watch_parent() -> None:  # the pool closed the pipe (or died): shut down
        with contextlib.suppress(EOFError, OSError):
            conn.recv()
        server.should_exit = True

    threading.Thread(target=watch_parent, daemon=True).start()
    conn.send(("ready", sock.getsockname()[1]))
    # As for zip instances, Ctrl-C is the stack's to handle; uvicorn re-raises what it caught
    # with the handler it found, so ignoring it here keeps a clean exit.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    server.run(sockets=[sock])


class WebInstance(_Process):
    """One web-adapter execution environment: a process serving the app on a loopback port."""

    stop_grace = 5.0

    def __init__(self, pool: WebAdapterPool, index: int) -> None:
        module = f"fn_{pool.function}_{index}"
        super().__init__(pool.function, index, _serve_web, (str(pool.code_dir), module, pool.function))
        self.port = int(self.init_detail)
        self._ready(pool.readiness_path)

    def _ready(self, path: str) -> None:
        """What LWA does before the first invocation: poll the readiness path until it answers 200."""
        deadline = time.monotonic() + INIT_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            try:
                probe = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
                probe.request("GET", path)
                if probe.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise InvocationFailed("the function never became ready")


class WebAdapterPool:
    """The instances of a web-adapter function. The shim proxies each request to an idle one.

    Acquire and release run on the shim's event loop; only starting a process happens in a thread.
    """

    def __init__(
        self,
        function: str,
        code_dir: Path,
        *,
        timeout: float,
        readiness_path: str = "/healthz",
        max_instances: int = DEFAULT_MAX_INSTANCES,
    ) -> None:
        self.function = function
        self.code_dir = code_dir
        self.timeout = timeout
        self.readiness_path = readiness_path
        self.max_instances = max(1, max_instances)
        self._idle: list[WebInstance] = []
        self._all: list[WebInstance] = []
        self._starting = 0
        self._started = 0
        self._returned: asyncio.Condition | None = None

    @property
    def instances(self) -> int:
        return len(self._all)

    def start(self) -> WebAdapterPool:
        instance = self._new()
        self._all.append(instance)
        self._idle.append(instance)
        return self

    def _new(self) -> WebInstance:
        self._started += 1
        return WebInstance(self, self._started)

    async def acquire(self) -> WebInstance:
        if self._returned is None:
            self._returned = asyncio.Condition()
        while True:
            if self._idle:
                return self._idle.pop()
            if len(self._all) + self._starting < self.max_instances:
                self._starting += 1
                try:
                    instance = await anyio.to_thread.run_sync(self._new)
                finally:
                    self._starting -= 1
                self._all.append(instance)
                return instance
            async with self._returned:
                await self._returned.wait()

    async def release(self, instance: WebInstance, *, healthy: bool = True) -> None:
        if healthy:
            self._idle.append(instance)
        else:  # timed out: Lambda stops the environment; the next call gets a fresh one
            if instance in self._all:
                self._all.remove(instance)
            instance.stop()
        if self._returned is not None:
            async with self._returned:
                self._returned.notify()

    def stop(self) -> None:
        instances, self._all, self._idle = list(self._all), [], []
        for instance in instances:
            instance.stop()
