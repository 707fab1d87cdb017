"""The web listener's HTTP side: the monitor page, its JSON API, the live stream.

Routes (every ``/api`` answer is JSON; errors are ``{"error": "..."}``):

* ``GET /`` the monitor (a login page until logged in), ``GET /static/*``
  its script and style sheet;
* ``POST /login`` (form field ``password``) and ``POST /logout``;
* ``POST /api/login`` ``{"password": ...}``, ``GET /api/session``;
* ``GET /api/state`` everything the monitor shows, ``GET /api/events`` the
  same as server-sent events (``event: state``) every refresh;
* ``POST /api/control/NAME`` with a JSON object: ``message`` {room, text},
  ``close-room`` {room}, ``pause`` / ``resume`` {room}, ``disconnect`` {user,
  listener?}, ``end-match`` {match};
* ``/metrics`` and ``/health`` from :mod:`gtserver.web.metrics`.

Request bodies over :data:`MAX_BODY` bytes are refused with 413 before they
are kept.
"""

from __future__ import annotations

import json
from importlib import resources as package_files
from io import BytesIO
from typing import Any

from twisted.internet.defer import ensureDeferred
from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.resource import Resource

from gtserver.core.peers import Peer, TrustedProxies
from gtserver.core.throttle import LoginThrottled
from gtserver.store import StoreError
from gtserver.web.auth import COOKIE, NotAllowed, WebAuth, WebSession
from gtserver.web.monitor import ControlError, Monitor

#: Largest request body accepted, in bytes.
MAX_BODY = 16 * 1024
STATIC_TYPES = {"monitor.js": b"text/javascript; charset=utf-8",
                "monitor.css": b"text/css; charset=utf-8"}
SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'self'; frame-ancestors 'none'; "
                                b"base-uri 'none'; form-action 'self'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-store",
}


def static_file(name: str) -> bytes:
    return package_files.files("gtserver.web").joinpath("static", name).read_bytes()


class WebRequest(server.Request):
    """A request whose body may not exceed MAX_BODY bytes (413 otherwise)."""

    too_large = False
    _received = 0

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > MAX_BODY:
            self.too_large = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.too_large:
            return
        self._received += len(data)
        if self._received > MAX_BODY:
            self.too_large = True
            self.content = BytesIO()
            return
        super().handleContentChunk(data)

    def process(self) -> None:
        if not self.too_large:
            super().process()
            return
        self.site = self.channel.site
        self.setResponseCode(413)
        for name, value in SECURITY_HEADERS.items():
            self.setHeader(name, value)
        self.setHeader(b"content-type", b"application/json")
        self.setHeader(b"connection", b"close")
        self.write(json.dumps({"error": f"request body over {MAX_BODY} bytes"}).encode())
        self.finish()


class WebChannel(http.HTTPChannel):
    def connectionMade(self) -> None:
        super().connectionMade()
        self.site.connections.add(self)

    def connectionLost(self, reason: Any) -> None:
        self.site.connections.discard(self)
        super().connectionLost(reason)


class WebSite(server.Site):
    """The factory of the ``web`` listener."""

    requestFactory = WebRequest
    protocol = WebChannel
    noisy = False

    def __init__(self, monitor: Monitor, auth: WebAuth,
                 extra: dict[bytes, Resource] | None = None,
                 trusted_proxies: TrustedProxies | None = None) -> None:
        self.monitor = monitor
        self.auth = auth
        self.trusted_proxies = trusted_proxies or TrustedProxies()
        self.connections: set[WebChannel] = set()
        self.streams: set[Any] = set()
        root = Root(self)
        for name, resource in (extra or {}).items():
            root.putChild(name, resource)
        super().__init__(root)
        self.displayTracebacks = False

    def startFactory(self) -> None:
        super().startFactory()
        self.monitor.start()

    def stopFactory(self) -> None:
        self.monitor.stop()
        for request in list(self.streams):
            request.finish()
        self.streams.clear()
        super().stopFactory()

    def log(self, request: Any) -> None:
        pass  # no access log: the daemon's log is for events, not page views


# helpers


def peer_of(request: Any) -> Peer:
    """The client: behind a trusted proxy, the one its X-Forwarded-For names."""
    return request.site.trusted_proxies.client(Peer.of(request.transport),
                                               request.getHeader("x-forwarded-for"))


def send_json(request: Any, status: int, value: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(value).encode("utf-8")


def error(request: Any, status: int, message: str) -> bytes:
    return send_json(request, status, {"error": message})


def secure_headers(request: Any) -> None:
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name, value)


class Credentials:
    """Who sent a request: a cookie session, a bearer token, or nobody."""

    def __init__(self, who: str, session: WebSession | None) -> None:
        self.who = who
        self.session = session


def credentials_of(site: WebSite, request: Any) -> Credentials | None:
    authorization = request.getHeader(b"authorization")
    if authorization is not None:
        scheme, _, value = authorization.partition(b" ")
        if scheme.lower() == b"bearer" and site.auth.token_matches(value.strip()):
            return Credentials("token", None)
        return None
    session = site.auth.session((request.getCookie(COOKIE) or b"").decode("ascii", "replace"))
    if session is None:
        return None
    return Credentials(session.who, session)


def csrf_ok(site: WebSite, request: Any, credentials: Credentials, form: bool = False) -> bool:
    if credentials.session is None:
        return True  # a bearer token: no cookie the browser could send on its own
    offered = request.getHeader(b"x-csrf-token")
    if offered is None and form:
        values = request.args.get(b"csrf")
        offered = values[0] if values else None
    return site.auth.csrf_matches(credentials.session, offered)


def set_session_cookie(request: Any, session: WebSession | None) -> None:
    value = session.id.encode() if session is not None else b""
    request.addCookie(COOKIE, value, path=b"/", httpOnly=True, sameSite="strict",
                      secure=request.isSecure(),
                      max_age=None if session is not None else b"0")


class Root(Resource):
    def __init__(self, site: WebSite) -> None:
        super().__init__()
        self.site = site
        self.putChild(b"login", Login(site))
        self.putChild(b"logout", Logout(site))
        self.putChild(b"static", Static())
        self.putChild(b"api", Api(site))

    def getChild(self, path: bytes, request: Any) -> Resource:
        if path == b"":
            return self
        return NotFound()

    def render_GET(self, request: Any) -> bytes:
        secure_headers(request)
        if credentials_of(self.site, request) is None:
            request.redirect(b"/login")
            return b""
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return static_file("index.html")


class NotFound(Resource):
    isLeaf = True

    def render(self, request: Any) -> bytes:
        secure_headers(request)
        return error(request, 404, "no such page")


class Static(Resource):
    def getChild(self, path: bytes, request: Any) -> Resource:
        name = path.decode("ascii", "replace")
        if name not in STATIC_TYPES:
            return NotFound()
        return StaticFile(name)


class StaticFile(Resource):
    isLeaf = True

    def __init__(self, name: str) -> None:
        super().__init__()
        self.name = name

    def render_GET(self, request: Any) -> bytes:
        secure_headers(request)
        request.setHeader(b"content-type", STATIC_TYPES[self.name])
        return static_file(self.name)


def login_page(message: str = "") -> bytes:
    page = static_file("login.html").decode("utf-8")
    text = (message.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            if message else "")
    return page.replace("{{message}}", text).encode("utf-8")


class Login(Resource):
    isLeaf = True

    def __init__(self, site: WebSite) -> None:
        super().__init__()
        self.site = site

    def render_GET(self, request: Any) -> bytes:
        secure_headers(request)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return login_page()

    def render_POST(self, request: Any) -> Any:
        secure_headers(request)
        values = request.args.get(b"password")
        password = values[0].decode("utf-8", "surrogateescape") if values else ""
        ensureDeferred(self._log_in(request, password))
        return server.NOT_DONE_YET

    async def _log_in(self, request: Any, password: str) -> None:
        try:
            session = await self.site.auth.log_in(password, peer_of(request))
        except (NotAllowed, LoginThrottled, StoreError) as refusal:
            status = 429 if isinstance(refusal, LoginThrottled) else (
                503 if isinstance(refusal, StoreError) else 403)
            request.setResponseCode(status)
            request.setHeader(b"content-type", b"text/html; charset=utf-8")
            finish(request, login_page(str(refusal) or "the store is unavailable"))
            return
        set_session_cookie(request, session)
        request.redirect(b"/")
        finish(request, b"")


class Logout(Resource):
    isLeaf = True

    def __init__(self, site: WebSite) -> None:
        super().__init__()
        self.site = site

    def render_POST(self, request: Any) -> bytes:
        secure_headers(request)
        credentials = credentials_of(self.site, request)
        if credentials is not None and credentials.session is not None:
            if not csrf_ok(self.site, request, credentials, form=True):
                return error(request, 403, "missing or wrong CSRF token")
            self.site.auth.log_out(credentials.session)
        set_session_cookie(request, None)
        request.redirect(b"/login")
        return b""


def finish(request: Any, body: bytes) -> None:
    if request.finished or request.channel is None:
        return
    request.write(body)
    request.finish()


def read_json(request: Any) -> Any:
    """The request's JSON body (an object), else ControlError 400."""
    content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip()
    if content_type.lower() != b"application/json":
        raise ControlError(415, "send the body as application/json")
    try:
        value = json.loads(request.content.read().decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ControlError(400, "the body is not JSON") from None
    if not isinstance(value, dict):
        raise ControlError(400, "the body must be a JSON object")
    return value


def text_field(body: dict, name: str, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ControlError(400, f"{name!r} must be a non-empty string")
    return value


class Api(Resource):
    isLeaf = True

    def __init__(self, site: WebSite) -> None:
        super().__init__()
        self.site = site

    def render(self, request: Any) -> Any:
        secure_headers(request)
        path = [segment.decode("utf-8", "replace") for segment in request.postpath]
        method = request.method
        if path == ["login"]:
            if method != b"POST":
                return error(request, 405, "use POST")
            ensureDeferred(self._log_in(request))
            return server.NOT_DONE_YET
        credentials = credentials_of(self.site, request)
        if credentials is None:
            return error(request, 401, "log in first (or send Authorization: Bearer TOKEN)")
        if path == ["session"] and method == b"GET":
            session = credentials.session
            return send_json(request, 200, {"who": credentials.who,
                                            "csrf": session.csrf if session else None})
        if path == ["state"] and method == b"GET":
            return send_json(request, 200, self.site.monitor.state())
        if path == ["events"] and method == b"GET":
            return self._stream(request)
        if len(path) == 2 and path[0] == "control":
            if method != b"POST":
                return error(request, 405, "controls are POST requests")
            if not csrf_ok(self.site, request, credentials):
                return error(request, 403, "missing or wrong CSRF token (X-CSRF-Token)")
            ensureDeferred(self._control(request, path[1], credentials))
            return server.NOT_DONE_YET
        return error(request, 404, f"no such API: {method.decode()} /api/{'/'.join(path)}")

    async def _log_in(self, request: Any) -> None:
        try:
            body = read_json(request)
            password = body.get("password")
            if not isinstance(password, str):
                raise ControlError(400, "'password' must be a string")
            session = await self.site.auth.log_in(password, peer_of(request))
        except ControlError as refusal:
            finish(request, error(request, refusal.status, refusal.message))
            return
        except NotAllowed as refusal:
            finish(request, error(request, 403, str(refusal)))
            return
        except LoginThrottled as refusal:
            request.setHeader(b"retry-after", str(int(refusal.retry_after) + 1).encode())
            finish(request, error(request, 429, str(refusal)))
            return
        except StoreError as refusal:
            finish(request, error(request, 503, f"the store is unavailable: {refusal}"))
            return
        set_session_cookie(request, session)
        finish(request, send_json(request, 200, {"who": session.who, "csrf": session.csrf}))

    def _stream(self, request: Any) -> Any:
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"x-accel-buffering", b"no")
        site = self.site

        def send(encoded: str) -> None:
            request.write(b"event: state\ndata: " + encoded.encode("utf-8") + b"\n\n")

        def gone(_: Any) -> None:
            site.monitor.subscribers.discard(send)
            site.streams.discard(request)

        request.notifyFinish().addBoth(gone)
        site.streams.add(request)
        site.monitor.subscribers.add(send)
        send(json.dumps(site.monitor.state()))
        return server.NOT_DONE_YET

    async def _control(self, request: Any, name: str, credentials: Credentials) -> None:
        monitor = self.site.monitor
        who = credentials.who
        address = peer_of(request).address
        try:
            body = read_json(request)
            if name == "message":
                monitor.room_message(text_field(body, "room"), text_field(body, "text"),
                                     who, address)
                result: dict[str, Any] = {}
            elif name == "close-room":
                result = {"connections": monitor.close_room(text_field(body, "room"), who,
                                                            address)}
            elif name in ("pause", "resume"):
                monitor.pause_room(text_field(body, "room"), name == "pause", who, address)
                result = {}
            elif name == "disconnect":
                result = {"connections": monitor.disconnect_user(
                    text_field(body, "user"), text_field(body, "listener", required=False),
                    who, address)}
            elif name == "end-match":
                await monitor.end_match(text_field(body, "match"), who, address)
                result = {}
            else:
                raise ControlError(404, f"no such control: {name}")
        except ControlError as refusal:
            finish(request, error(request, refusal.status, refusal.message))
            return
        except StoreError as failure:
            finish(request, error(request, 503, f"the store is unavailable: {failure}"))
            return
        except Exception:
            Logger().failure("web control {name} failed", name=name)
            finish(request, error(request, 500, "internal error"))
            return
        finish(request, send_json(request, 200, {"ok": True, **result}))
