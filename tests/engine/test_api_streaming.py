"""Streamed answers of the admin API on a real loopback server: every chunk arrives in
order, and a stream that fails half-way cuts the connection instead of looking whole."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import treq
from twisted.internet import defer, task
from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase
from twisted.web import resource, server
from twisted.web.client import ResponseFailed

from engine.api.routing import Answer, ApiRequest, Route, Router, Streamed

reactor: Any = _reactor


class StreamingTests(TestCase):
    """A route answering with `Streamed` chunks produced asynchronously."""

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        async def lines(count: int, fail_at: int | None) -> AsyncIterator[bytes]:
            for i in range(count):
                if i == fail_at:
                    raise RuntimeError("store went away")
                await task.deferLater(reactor, 0, lambda: None)
                yield b"line %d " % i + b"x" * 4000 + b"\n"

        async def many(request: ApiRequest) -> Answer:
            fail = request.query("fail")
            return Answer(200, Streamed(lines(2000, int(fail) if fail else None)),
                          content_type="application/x-ndjson")

        root = resource.Resource()
        api = resource.Resource()
        root.putChild(b"api", api)
        api.putChild(b"v1", Router([Route("GET", "lines", many, None)]))
        self.port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            server.Site(root))
        self.base = f"http://127.0.0.1:{self.port.getHost().port}/api/v1/"

    def tearDown(self) -> Any:
        return self.port.stopListening()

    @defer.inlineCallbacks
    def test_every_chunk_arrives_in_order(self) -> Any:
        """Two thousand lines (8 MB) come through with their content type."""
        response = yield treq.get(self.base + "lines", persistent=False)
        body = yield response.content()
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers.getRawHeaders("content-type"),
                         ["application/x-ndjson"])
        got = body.splitlines()
        self.assertEqual(len(got), 2000)
        self.assertEqual([int(line.split()[1]) for line in got], list(range(2000)))

    @defer.inlineCallbacks
    def test_a_failure_mid_stream_cuts_the_connection(self) -> Any:
        """The caller cannot mistake a truncated export for a complete one."""
        response = yield treq.get(self.base + "lines?fail=5", persistent=False)
        self.assertEqual(response.code, 200)
        with self.assertRaises(ResponseFailed):
            yield response.content()
        self.flushLoggedErrors(RuntimeError)
