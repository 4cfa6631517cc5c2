"""The ``/v1`` relay: forward to the configured upstream, write every read to the client
unchanged and at once, and only then split and time it for the recording.

Nothing here awaits the database: the finished recording is handed to the recorder
from ``finally``, whatever ended the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from proxy.credentials import bearer_token, fingerprint, redact_headers, redact_query, request_credential
from proxy.errors import error_response
from proxy.ids import IdSource
from proxy.matching import UNPARSED, match_key
from proxy.metrics import Metrics
from proxy.reads import BLOCK, Reads
from proxy.record import Outcome, Record
from proxy.recorder import Recorder
from proxy.settings import Settings

__all__ = ["HOP_BY_HOP", "Relay", "RuntimeState", "cut", "new_record"]

log = logging.getLogger("streamproxy.relay")

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)
# Recomputed or replaced on the way up; the fault header is ours, never upstream's business.
_REQUEST_DROP = HOP_BY_HOP | {"host", "content-length", "accept-encoding", "x-streamproxy-fault"}
_KEY_HEADERS = ("authorization", "api-key", "x-api-key")

_UPSTREAM_BROKE = (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, ConnectionResetError)


@dataclass(slots=True)
class RuntimeState:
    """What changes while the app runs; one per app."""

    shutting_down: bool = False
    ids: IdSource = field(default_factory=IdSource)  # recording ids, in the order requests came


def new_record(request: web.Request, body: bytes, settings: Settings, ids: IdSource) -> Record:
    """A recording for this request, credentials already redacted and fingerprinted, its id from ``ids``."""
    model: str | None = None
    stream = False
    parsed: Any = UNPARSED  # parsed once, here, for the model and the match key alike
    if body[:1] in (b"{", b" ", b"\n", b"\t", b"\r"):
        with contextlib.suppress(orjson.JSONDecodeError):
            parsed = orjson.loads(body)
        if isinstance(parsed, dict):
            m = parsed.get("model")
            model = m if isinstance(m, str) else None
            stream = parsed.get("stream") is True
    path = request.rel_url.raw_path
    return Record(
        id=ids(),
        started_at=datetime.now(UTC),
        method=request.method,
        path=path,
        query=redact_query(request.rel_url.raw_query_string),
        request_headers=redact_headers(request.headers.items()),
        request_body=body,
        key_fingerprint=fingerprint(request_credential(request.headers)),
        model=model,
        stream=stream,
        match_key=match_key(request.method, path, body, settings.match_ignore, parsed),
    )


class Relay:
    """Forwards one request upstream and streams the answer back, recording beside it."""

    def __init__(
        self,
        settings: Settings,
        session: aiohttp.ClientSession,
        recorder: Recorder | None,
        metrics: Metrics,
        state: RuntimeState,
    ) -> None:
        self.settings = settings
        self.session = session
        self.recorder = recorder
        self.metrics = metrics
        self.state = state
        self._base = settings.upstream
        self._upstream_host = URL(settings.upstream).host
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=settings.connect_timeout, sock_read=settings.read_timeout
        )

    def upstream_url(self, request: web.Request) -> URL:
        """The configured upstream plus this request's path and query; never anything a client names."""
        rel = request.rel_url
        raw = self._base + rel.raw_path + (("?" + rel.raw_query_string) if rel.raw_query_string else "")
        url = URL(raw, encoded=True)
        if url.host != self._upstream_host:  # defence in depth: path tricks must not move the host
            raise web.HTTPBadRequest(text="bad path")
        return url

    def upstream_headers(self, request: web.Request) -> CIMultiDict[str]:
        headers: CIMultiDict[str] = CIMultiDict()
        replace_key = bool(self.settings.client_keys)
        for name, value in request.headers.items():
            lname = name.lower()
            if lname in _REQUEST_DROP or (replace_key and lname in _KEY_HEADERS):
                continue
            headers.add(name, value)
        if replace_key and self.settings.upstream_key:
            headers["Authorization"] = f"Bearer {self.settings.upstream_key}"
        headers["Accept-Encoding"] = "identity"
        return headers

    def admitted(self, request: web.Request) -> bool:
        """With client keys configured, only a listed key as Bearer gets through."""
        if not self.settings.client_keys:
            return True
        token = bearer_token(request.headers.get("Authorization"))
        return token is not None and token in self.settings.client_keys

    def finish(self, rec: Record, loop_start: float, record: bool) -> None:
        rec.ended_at = datetime.now(UTC)
        rec.duration_ms = (asyncio.get_running_loop().time() - loop_start) * 1000.0
        self.metrics.observe(rec)
        if record and self.recorder is not None:
            self.recorder.submit(rec)

    def reject(self, rec: Record, loop_start: float, record: bool, status: int, message: str, type_: str, code: str) -> web.Response:
        """A proxy-made error before any upstream contact, recorded like everything else."""
        body = orjson.dumps({"error": {"message": message, "type": type_, "code": code}})
        rec.match_key = ""  # the proxy's own answer: nothing upstream said, so nothing to replay
        rec.status = status
        rec.response_headers = {"content-type": "application/json"}
        rec.chunks = [body]
        rec.offsets_ms = [0.0]
        rec.ttfb_ms = 0.0
        rec.outcome = Outcome.PROXY_ERROR if status >= 500 else Outcome.COMPLETE
        rec.error = message
        self.finish(rec, loop_start, record)
        return error_response(status, message, type_, code, recording_id=rec.id)

    async def forward(self, request: web.Request, rec: Record, loop_start: float, *, record: bool) -> web.StreamResponse:
        """Relay to upstream. ``rec`` is filled in as the answer passes and submitted at the end."""
        loop = asyncio.get_running_loop()
        resp: web.StreamResponse | None = None
        upstream: aiohttp.ClientResponse | None = None
        event_stream = False
        reads: list[bytes] = []  # the latest reads; those before them are in `kept`
        read_ms: list[float] = []  # when each read arrived, for an event stream
        held = 0  # bytes in `reads`
        kept = Reads(compress=record)
        last_read = loop_start  # then, when the relay next waited for upstream
        writing = False
        watch: asyncio.TimerHandle | None = None
        squeeze: asyncio.TimerHandle | None = None  # compresses what `kept` holds raw, if the stream goes quiet
        idle_limit = self.settings.read_timeout

        def watch_upstream() -> None:
            """Break the stream off once upstream has said nothing for ``read_timeout`` while the
            relay waited for it (not while it waited for the client: that is the client's pace)."""
            nonlocal watch
            if writing:  # a period later, the write is most likely done
                watch = loop.call_later(idle_limit, watch_upstream)
                return
            due = last_read + idle_limit
            if loop.time() < due:
                watch = loop.call_at(due, watch_upstream)
                return
            assert upstream is not None
            upstream.content.set_exception(aiohttp.ServerTimeoutError(f"no bytes from upstream for {idle_limit:g} s"))

        try:
            try:
                upstream = await self.session.request(
                    request.method,
                    self.upstream_url(request),
                    headers=self.upstream_headers(request),
                    data=rec.request_body if rec.request_body else None,
                    allow_redirects=False,
                    timeout=self._timeout,
                )
            except (TimeoutError, aiohttp.ServerTimeoutError):
                rec.outcome = Outcome.UPSTREAM_ERROR
                return self._before_headers(rec, 504, "upstream timed out before answering", "upstream_timeout")
            except (aiohttp.ClientError, OSError) as exc:
                rec.outcome = Outcome.UPSTREAM_ERROR
                return self._before_headers(rec, 502, f"upstream unreachable: {exc}", "upstream_unreachable")

            rec.status = upstream.status
            # aiohttp's own read timeout (sock_read) re-arms a timer at every read, ~1 µs each, 20
            # to 40 a stream; from here on one watchdog a period does it (the headers' was armed).
            connection = upstream.connection
            if connection is not None and connection.protocol is not None:
                connection.protocol.read_timeout = None
            last_read = loop.time()
            watch = loop.call_at(last_read + idle_limit, watch_upstream)
            resp = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for raw_name, raw_value in upstream.raw_headers:
                name = raw_name.decode("latin-1")
                if name.lower() not in HOP_BY_HOP:
                    resp.headers.add(name, raw_value.decode("latin-1"))
            rec.response_headers = redact_headers(resp.headers.items())
            resp.headers["X-Recording-Id"] = rec.id
            content_type = upstream.headers.get("Content-Type", "")
            event_stream = content_type.startswith("text/event-stream")
            await resp.prepare(request)

            async for data in upstream.content.iter_any():
                writing = True
                try:
                    await resp.write(data)
                except ConnectionError as exc:
                    raise _ClientGone from exc
                writing = False
                # Written first; timed after the bytes are on their way, split into events at the end.
                last_read = loop.time()
                if rec.ttfb_ms is None:
                    rec.ttfb_ms = (last_read - loop_start) * 1000.0
                reads.append(data)
                if event_stream:
                    read_ms.append((last_read - loop_start) * 1000.0)
                held += len(data)
                if held >= BLOCK:
                    held = 0
                    due = kept.fold(reads, read_ms, last_read)
                    if due is not None:
                        if squeeze is not None:
                            squeeze.cancel()
                        squeeze = loop.call_at(due, kept.squeeze)
            await resp.write_eof()
            return resp
        except (TimeoutError, aiohttp.ServerTimeoutError):
            rec.outcome = Outcome.UPSTREAM_ERROR
            rec.error = f"no bytes from upstream for {self.settings.read_timeout:g} s"
            cut(request)
            return resp if resp is not None else web.Response(status=504)
        except _ClientGone:
            rec.outcome = Outcome.CLIENT_CLOSED
            rec.error = "client closed the connection"
            if upstream is not None:
                upstream.close()
            return resp if resp is not None else web.Response(status=499)
        except _UPSTREAM_BROKE as exc:
            rec.outcome = Outcome.UPSTREAM_CLOSED
            rec.error = f"upstream broke off: {exc!r}"
            cut(request)
            return resp if resp is not None else web.Response(status=502)
        except asyncio.CancelledError:
            if self.state.shutting_down:
                rec.outcome = Outcome.PROXY_ERROR
                rec.error = "shutdown grace ran out"
            else:
                rec.outcome = Outcome.CLIENT_CLOSED
                rec.error = "client closed the connection"
            if upstream is not None:
                upstream.close()
            raise
        except Exception as exc:
            log.exception("relay failed for %s", rec.id)
            rec.outcome = Outcome.PROXY_ERROR
            rec.error = f"proxy error: {exc!r}"
            if upstream is not None:
                upstream.close()
            if resp is None:
                return error_response(500, "streamproxy failed to relay this request", "proxy_error", "proxy_error", recording_id=rec.id)
            cut(request)
            return resp
        finally:
            if watch is not None:
                watch.cancel()
                watch = None
            if squeeze is not None:
                squeeze.cancel()
            # watch_upstream re-arms itself, so it holds itself through its closure, and with it
            # the upstream response: a cycle that only the collector's oldest generation frees.
            # At 500 streams some 3,000 responses (12 MB) waited for it.
            del watch_upstream
            if upstream is not None:
                upstream.release()
            if event_stream and (reads or kept):
                # Sealed here, from the body and the event ends: no event becomes an object of its own.
                rec.packed = kept.pack(reads, read_ms)
            elif reads or kept:
                rec.chunks.append(kept.body(reads))
                rec.offsets_ms.append((last_read - loop_start) * 1000.0)
            self.finish(rec, loop_start, record)

    def _before_headers(self, rec: Record, status: int, message: str, code: str) -> web.Response:
        rec.match_key = ""
        rec.status = status
        rec.error = message
        body = orjson.dumps({"error": {"message": message, "type": "upstream_error", "code": code}})
        rec.response_headers = {"content-type": "application/json"}
        rec.chunks.append(body)
        rec.offsets_ms.append(0.0)
        return error_response(status, message, "upstream_error", code, recording_id=rec.id)


def cut(request: web.Request) -> None:
    """Break the client's response off without a clean end of the body, as upstream broke off ours."""
    transport = request.transport
    if transport is not None:
        transport.close()


class _ClientGone(Exception):
    """Writing to the client failed: it hung up."""
