"""HTTP layer: a threading HTTP/1.1 server whose handler speaks the Messages API and ``/_sim/``.

Built on ``http.server`` for direct socket control: resets (SO_LINGER 0), hangs, truncated chunked
streams and client-disconnect detection while streaming.
"""

from __future__ import annotations

import contextlib
import json
import logging
import select
import socket
import struct
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from local.simulator.admin import handle_admin
from local.simulator.batches import errored, parse_create, succeeded
from local.simulator.config import Latency
from local.simulator.content import collect_text
from local.simulator.errors import ApiError, error_body
from local.simulator.faults import Fault
from local.simulator.messages import Reply, plan_reply, validate
from local.simulator.recording import RecordedRequest
from local.simulator.usage import count_input_tokens

if TYPE_CHECKING:
    from local.simulator.simulator import Simulator

log = logging.getLogger(__name__)

MALFORMED_BODY = b'{"id": "msg_sim_malformed", "type": "message", "content": [{"type": "text", "text": "'


class ClientGone(Exception):
    """The client closed the connection while we were answering."""


class Stopping(Exception):
    """The simulator is shutting down: drop the request."""


class SimulatorHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # load tests open many connections at once

    def __init__(self, address: tuple[str, int], sim: Simulator) -> None:
        self.sim = sim
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, SimulatorHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Connection errors are the clients' business (tests close sockets on purpose)."""
        log.debug("connection error from %s", client_address, exc_info=True)

    def close_connections(self) -> None:
        """Unblock handler threads waiting on idle keep-alive connections."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class SimulatorHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms delayed-ACK stall
    server: SimulatorHTTPServer
    server_version = "claude-simulator"
    sys_version = ""

    # per request
    request_id: str
    record: RecordedRequest | None
    status_sent: int | None

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests assert on ``Simulator.requests`` instead."""

    @property
    def sim(self) -> Simulator:
        return self.server.sim

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- dispatch --------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        self.request_id = "req_sim_" + uuid.uuid4().hex[:24]
        self.record = None
        self.status_sent = None
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        started = time.monotonic()
        try:
            raw = self._read_body()
            body: Any = None
            bad_json = False
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    bad_json = True
            if path.startswith("/_sim"):
                self._admin(method, path, url.query, body, bad_json)
                return
            self.record = self.sim.log.add(
                RecordedRequest(
                    method=method,
                    path=path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=body if not bad_json else raw.decode("utf-8", "replace"),
                    time=time.time(),
                    request_id=self.request_id,
                )
            )
            if bad_json:
                raise ApiError("invalid_request_error", "The request body is not valid JSON.")
            self._authenticate()
            self._route(method, path, body)
        except Exception as err:
            self._fail(err)
        finally:
            self._update(duration=time.monotonic() - started)

    def _fail(self, err: Exception) -> None:
        """Turn what interrupted a request into an API error response, if one can still be sent."""
        if isinstance(err, Stopping):
            self._abort()
            return
        if not isinstance(err, ClientGone | ApiError):  # a simulator bug must still answer like the API
            log.exception("simulator error on %s %s", self.command, self.path)
            err = ApiError("api_error", f"simulator error: {err!r}")
        if isinstance(err, ApiError) and self.status_sent is None:
            try:
                self._send_error(err)
                return
            except ClientGone:
                pass
        if isinstance(err, ClientGone):
            self._update(disconnected=True, completed=False)
        self.close_connection = True

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _authenticate(self) -> None:
        required = self.sim.config.api_key
        if required is None:
            return
        auth = self.headers.get("Authorization", "")
        presented = self.headers.get("x-api-key") or (auth[7:] if auth.lower().startswith("bearer ") else None)
        if presented != required:
            raise ApiError("authentication_error", "invalid x-api-key")

    def _route(self, method: str, path: str, body: Any) -> None:
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/v1/messages":
            self._messages(body)
        elif method == "POST" and path == "/v1/messages/count_tokens":
            validate(body, self.sim.config, need_max_tokens=False)
            self._send_json(200, {"input_tokens": count_input_tokens(body)})
        elif path == "/v1/messages/batches" and method == "POST":
            self._batch_create(body)
        elif path == "/v1/messages/batches" and method == "GET":
            self._send_json(200, self.sim.batches.listing(self._base_url()))
        elif parts[:3] == ["v1", "messages", "batches"] and len(parts) in (4, 5):
            batch_id = parts[3]
            action = parts[4] if len(parts) == 5 else None
            if method == "GET" and action is None:
                batch = self.sim.batches.get(batch_id)
                self._send_json(200, self.sim.batches.describe(batch, self._base_url()))
            elif method == "GET" and action == "results":
                self._send_bytes(200, self.sim.batches.results_jsonl(batch_id), "application/binary")
            elif method == "POST" and action == "cancel":
                batch = self.sim.batches.cancel(batch_id)
                self._send_json(200, self.sim.batches.describe(batch, self._base_url()))
            else:
                raise ApiError("not_found_error", f"Not found: {method} {path}")
        else:
            raise ApiError("not_found_error", f"Not found: {method} {path}")

    def _base_url(self) -> str:
        host = self.headers.get("Host")
        return f"http://{host}" if host else self.sim.url

    # --- /v1/messages ----------------------------------------------------------------------------

    def _messages(self, body: Any) -> None:
        stream = isinstance(body, dict) and body.get("stream") is True
        self._update(stream=stream)
        fault = self.sim.faults.take(collect_text(body))
        if fault is not None:
            self._update(fault=fault)
            if self._apply_fault(fault, stream):
                return
        config = self.sim.config
        validate(body, config)
        reply = plan_reply(body, config, self.sim.cache)
        if stream:
            self._stream(reply, config.latency, fault)
            return
        self._pause(config.latency.ttft + config.latency.output_seconds(reply.usage.output_tokens))
        self._send_json_or_truncate(reply.message(), fault)

    def _send_json_or_truncate(self, payload: Any, fault: Fault | None) -> None:
        """200 with ``payload``; under a truncate fault, half of it and then the connection closes."""
        data = json.dumps(payload).encode()
        if fault is not None and fault.kind == "truncate":
            self._send_head(200, "application/json", len(data))
            self._write(data[: len(data) // 2])
            self._abort()
            return
        self._send_bytes(200, data, "application/json")

    def _apply_fault(self, fault: Fault, stream: bool) -> bool:
        """Inflict a fault that replaces the reply; False for stream faults that need one."""
        if fault.kind == "status" or (fault.kind == "stream_error" and not stream):
            headers = dict(fault.headers)
            if fault.retry_after is not None:
                value = fault.retry_after
                headers["retry-after"] = str(int(value)) if float(value).is_integer() else str(value)
            if fault.retry_after_ms is not None:
                headers["retry-after-ms"] = str(fault.retry_after_ms)
            error_type = fault.error_type or "api_error"
            self._send_error(ApiError(error_type, fault.message or "", fault.status_code, fault.error_code), headers)
            return True
        if fault.kind == "hang":
            self.sim.stopping.wait(fault.seconds or 0.0)
            self._abort(reset=False)
            return True
        if fault.kind == "reset":
            self._abort(reset=True)
            return True
        if fault.kind == "malformed":
            self._send_bytes(200, MALFORMED_BODY, "application/json")
            return True
        return False

    def _stream(self, reply: Reply, latency: Latency, fault: Fault | None) -> None:
        self._send_head(200, "text/event-stream; charset=utf-8", None, {"Cache-Control": "no-cache"}, chunked=True)
        self._pause(latency.ttft)
        self._event("message_start", {"type": "message_start", "message": reply.start_message()})
        stop_after = fault.after_deltas if fault is not None and fault.kind in ("truncate", "stream_error") else None
        sent = 0

        def check_fault() -> bool:
            if fault is None or stop_after is None or sent < stop_after:
                return False
            if fault.kind == "truncate":
                self._abort()
            else:
                error_type = fault.error_type or "overloaded_error"
                self._event("error", error_body(error_type, fault.message, self.request_id, fault.error_code))
                self._end_chunks()
            return True

        for index, block in enumerate(reply.blocks):
            self._event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": block.start},
            )
            if index == 0:
                self._event("ping", {"type": "ping"})
            for delta, tokens in block.deltas:
                if check_fault():
                    return
                self._pause(latency.output_seconds(tokens))
                self._event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
                sent += 1
            if check_fault():
                return
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})
        self._event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                "usage": reply.delta_usage(),
            },
        )
        self._event("message_stop", {"type": "message_stop"})
        self._update(completed=True)  # recorded before the last write: the client may look right after it
        self._end_chunks()

    # --- batches ---------------------------------------------------------------------------------

    def _batch_create(self, body: Any) -> None:
        fault = self.sim.faults.take(collect_text(body), unmatched_only=True)
        if fault is not None:
            self._update(fault=fault)
            if self._apply_fault(fault, stream=False):
                return
        items = parse_create(body)
        config = self.sim.config
        results: list[dict[str, Any]] = []
        for custom_id, params in items:
            own = self.sim.faults.take(collect_text(params), matched_only=True)
            if own is not None and own.kind == "malformed":
                message = plan_reply(params, config, self.sim.cache, service_tier="batch").message()
                message["usage"]["output_tokens"] = -1
                results.append(succeeded(custom_id, message))
                continue
            if own is not None:
                error_type = own.error_type if own.kind in ("status", "stream_error") else "api_error"
                results.append(errored(custom_id, error_type or "api_error", own.message or "", own.error_code))
                continue
            try:
                if params.get("stream"):
                    raise ApiError("invalid_request_error", "stream: not supported in batches")
                validate(params, config)
                reply = plan_reply(params, config, self.sim.cache, service_tier="batch")
            except ApiError as err:
                results.append(errored(custom_id, err.error_type, err.message))
                continue
            results.append(succeeded(custom_id, reply.message()))
        batch = self.sim.batches.add(results, config.batch_delay)
        self._send_json_or_truncate(self.sim.batches.describe(batch, self._base_url()), fault)

    # --- /_sim admin -----------------------------------------------------------------------------

    def _admin(self, method: str, path: str, query: str, body: Any, bad_json: bool) -> None:
        try:
            if bad_json:
                raise ApiError("invalid_request_error", "The request body is not valid JSON.")
            status, payload = handle_admin(self.sim, method, path, body, query)
        except ValueError as err:
            raise ApiError("invalid_request_error", str(err)) from err
        self._send_json(status, payload)

    # --- writing ---------------------------------------------------------------------------------

    def _update(self, **changes: Any) -> None:
        if self.record is not None:
            self.sim.log.update(self.record, **changes)

    def _send_head(
        self,
        status: int,
        content_type: str,
        length: int | None,
        headers: dict[str, str] | None = None,
        *,
        chunked: bool = False,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("request-id", self.request_id)
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.status_sent = status
        self._update(status=status)
        try:
            self.end_headers()
        except OSError as err:
            raise ClientGone from err

    def _send_bytes(
        self, status: int, payload: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self._send_head(status, content_type, len(payload), headers)
        self._update(completed=200 <= status < 300)
        self._write(payload)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send_bytes(status, json.dumps(payload).encode(), "application/json", headers)

    def _send_error(self, err: ApiError, headers: dict[str, str] | None = None) -> None:
        self._send_json(err.status, error_body(err.error_type, err.message, self.request_id, err.error_code), headers)

    def _write(self, data: bytes) -> None:
        try:
            self.wfile.write(data)
        except OSError as err:
            raise ClientGone from err

    def _event(self, name: str, data: dict[str, Any]) -> None:
        """Write one SSE event as one chunk; detects a client that went away."""
        if self._peer_closed():
            raise ClientGone
        payload = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        if self.record is not None:
            self.sim.log.add_event(self.record, name)
        self._write(b"%x\r\n%b\r\n" % (len(payload), payload))

    def _end_chunks(self) -> None:
        self._write(b"0\r\n\r\n")

    def _peer_closed(self) -> bool:
        """True if the client closed its side (readable socket with nothing to read)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            peeked: bytes = self.connection.recv(1, socket.MSG_PEEK)
            return peeked == b""
        except OSError:
            return True

    def _pause(self, seconds: float) -> None:
        """Sleep (the latency model), but wake at once when the simulator stops."""
        if seconds > 0 and self.sim.stopping.wait(seconds):
            raise Stopping

    def _abort(self, *, reset: bool = False) -> None:
        """Close the connection without finishing the response (RST when ``reset``)."""
        self.close_connection = True
        try:
            if reset:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:
                self.connection.shutdown(socket.SHUT_RDWR)
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass
