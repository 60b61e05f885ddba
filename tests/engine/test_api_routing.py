"""The admin API router on a real loopback twisted.web server, called with treq."""

from __future__ import annotations

import json
from typing import Any

import treq
from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase
from twisted.web import resource, server

from engine.api.routing import (
    Answer,
    ApiRequest,
    BadRequest,
    NotFound,
    Principal,
    Role,
    Route,
    Router,
)

reactor: Any = _reactor

TOKENS = {"v": Principal("vera", Role.VIEWER, "token"),
          "o": Principal("otto", Role.OPERATOR, "token"),
          "a": Principal("ada", Role.ADMIN, "token")}


async def by_token(request: server.Request) -> Principal | None:
    header = (request.getHeader("authorization") or "").removeprefix("Bearer ")
    return TOKENS.get(header)


class RouterTests(TestCase):
    """Roles, path parameters, errors and methods, as a caller sees them over HTTP."""

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.refusals: list[tuple[str, str]] = []

        async def echo(request: ApiRequest) -> Answer:
            return Answer(200, {"params": request.params, "q": request.query("q"),
                                "who": request.principal.name if request.principal else None})

        async def body(request: ApiRequest) -> Answer:
            return Answer(201, request.json())

        async def missing(request: ApiRequest) -> Answer:
            raise NotFound(f"message {request.params['id']} does not exist")

        async def rejects(request: ApiRequest) -> Answer:
            raise BadRequest("limit must be a number")

        async def crashes(request: ApiRequest) -> Answer:
            raise RuntimeError("private detail")

        outer = self

        class Auditing(Router):
            async def refused(self, request: Any, principal: Principal, route: Route) -> None:
                outer.refusals.append((principal.name, route.pattern))

        router = Auditing([
            Route("GET", "things/{id}", echo, Role.VIEWER),
            Route("POST", "things", body, Role.OPERATOR),
            Route("GET", "open", echo, None),
            Route("GET", "missing/{id}", missing, Role.VIEWER),
            Route("GET", "bad", rejects, Role.VIEWER),
            Route("GET", "crash", crashes, Role.VIEWER),
            Route("POST", "admin-only", echo, Role.ADMIN),
        ], authenticate=by_token)
        root = resource.Resource()
        api = resource.Resource()
        root.putChild(b"api", api)
        api.putChild(b"v1", router)
        site = server.Site(root)
        self.port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.base = f"http://127.0.0.1:{self.port.getHost().port}/api/v1/"
        self.addCleanup(self.port.stopListening)

    @defer.inlineCallbacks
    def call(self, method: str, path: str, token: str | None = None,
             data: Any = None) -> Any:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        response = yield treq.request(method, self.base + path, headers=headers,
                                      data=json.dumps(data).encode() if data else None,
                                      persistent=False)
        text = yield response.content()
        return response.code, json.loads(text) if text else None

    @defer.inlineCallbacks
    def test_path_parameters_query_and_caller_reach_the_handler(self) -> Any:
        """A viewer's GET gets the id from the path and the query argument."""
        code, body = yield self.call("GET", "things/42?q=x", "v")
        self.assertEqual((code, body), (200, {"params": {"id": "42"}, "q": "x", "who": "vera"}))

    @defer.inlineCallbacks
    def test_no_credentials_is_401_and_too_little_role_is_403_and_reported(self) -> Any:
        """Unauthenticated calls get 401; a viewer posting gets 403 and the refusal hook runs."""
        code, _ = yield self.call("GET", "things/1")
        self.assertEqual(code, 401)
        code, body = yield self.call("POST", "things", "v", {"a": 1})
        self.assertEqual((code, body), (403, {"error": "needs the operator role"}))
        code, _ = yield self.call("POST", "admin-only", "o")
        self.assertEqual(code, 403)
        self.assertEqual(self.refusals, [("vera", "things"), ("otto", "admin-only")])
        code, body = yield self.call("POST", "things", "o", {"a": 1})
        self.assertEqual((code, body), (201, {"a": 1}))

    @defer.inlineCallbacks
    def test_open_routes_need_no_credentials(self) -> Any:
        """A route without a role serves anyone."""
        code, body = yield self.call("GET", "open")
        self.assertEqual((code, body["who"]), (200, None))

    @defer.inlineCallbacks
    def test_errors_become_clear_answers_without_internal_detail(self) -> Any:
        """NotFound → 404, BadRequest → 400, a crash → 500 naming only its kind."""
        self.assertEqual((yield self.call("GET", "missing/7", "v")),
                         (404, {"error": "message 7 does not exist"}))
        self.assertEqual((yield self.call("GET", "bad", "v")),
                         (400, {"error": "limit must be a number"}))
        logged: list[str] = []
        globalLogPublisher.addObserver(observe := lambda e: logged.append(formatEvent(e)))
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.assertEqual((yield self.call("GET", "crash", "v")),
                         (500, {"error": "RuntimeError"}))
        self.assertIn("admin request /api/v1/crash failed: RuntimeError", logged)
        self.assertFalse([line for line in logged if "private detail" in line])

    @defer.inlineCallbacks
    def test_unknown_paths_are_404_and_wrong_methods_405(self) -> Any:
        """Nothing matches → 404; the path exists for another method → 405."""
        self.assertEqual((yield self.call("GET", "nothing", "a"))[0], 404)
        self.assertEqual((yield self.call("DELETE", "things/1", "a"))[0], 405)

    @defer.inlineCallbacks
    def test_a_body_that_is_not_json_is_400(self) -> Any:
        """A broken JSON body is the caller's error, not a crash."""
        response = yield treq.post(self.base + "things", data=b"{nope",
                                   headers={"authorization": "Bearer o"}, persistent=False)
        self.assertEqual(response.code, 400)
        self.assertEqual((yield response.json()), {"error": "the body is not valid JSON"})
