"""The registrant dashboard (portal.md): sign-in with a one-time code, the JSON API and
the pages, for the registrant alone.

Nothing here selects whose data is shown but the session. Sign-in answers the same for
registered and unregistered NIKs. The pages are plain HTML forms (no script at all), so
the Content-Security-Policy can forbid every script and inline style.
"""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from datetime import date
from pathlib import Path
from typing import Any, TypeGuard

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from models import names
from portal import lifecycle, words
from portal.sender import CodeSender
from portal.settings import PortalSettings
from portal.store import (
    Guessing,
    Store,
    Verification,
    WaveView,
    make_portal_engine,
    stored_secret,
)
from rules.masking import mask_card, mask_nik_for_owner
from rules.outcomes import outcome_of

log = logging.getLogger("prakerja.portal")
HERE = Path(__file__).parent
COOKIE = "prakerja_session"
JSON = "application/json"

SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # Not `no-referrer`: under it browsers send `Origin: null` on a form POST, and
    # `same_origin` then refuses the portal's own forms. URLs carry nothing personal.
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]
NO_STORE = (b"cache-control", b"no-store")
HSTS = (b"strict-transport-security", b"max-age=31536000")
MAX_BODY = 16 * 1024  # bytes of a request body (portal.md, "Bounded work")


class SecurityHeaders:
    """Pure ASGI: every answer gets the headers above; all but static files `no-store`;
    every answer to a request that came over https (itself, or as a trusted proxy's
    `X-Forwarded-Proto` says: uvicorn's --proxy-headers set the scheme) HSTS."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        static = scope["path"].startswith("/static/")
        https = scope.get("scheme") == "https"

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = (
                    [h for h in message.get("headers", []) if h[0].lower() != b"cache-control"]
                    if not static
                    else list(message.get("headers", []))
                )
                headers += SECURITY_HEADERS
                if not static:
                    headers.append(NO_STORE)
                if https:
                    headers.append(HSTS)
                message["headers"] = headers
            await send(message)

        started = False

        async def send_tracked(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send_with_headers(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            # Starlette answers 500 and re-raises for the server to log with a traceback,
            # which could carry a value from the database: the type is all that is logged.
            log.error("portal: %s on %s %s", type(exc).__name__, scope["method"], scope["path"])
            if not started:
                await send_with_headers(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", JSON.encode())],
                    }
                )
                await send({"type": "http.response.body", "body": b'{"error":"internal_error"}'})


class BodyLimit:
    """Pure ASGI: a request body over MAX_BODY answers 413 before the app sees it.

    A declared `Content-Length` over the limit is refused unread; any other body (chunked
    ones declare no length) is read here, counting its chunks, and handed on whole, so no
    handler ever holds more than MAX_BODY. A request with neither header has no body."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = None
        framed = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                declared = value
            elif name == b"transfer-encoding":
                framed = True
        if declared is None and not framed:
            return await self.app(scope, receive, send)
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY):
            return await _too_large(send)
        chunks = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > MAX_BODY:
                return await _too_large(send)
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: the disconnect, when it comes
            replayed = True
            return {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        return await self.app(scope, replay, send)


async def _too_large(send) -> None:
    # `Connection: close`: the rest of the body is not read, so the connection cannot
    # carry another request.
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", JSON.encode()), (b"connection", b"close")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"error":"payload_too_large"}'})


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON, headers=headers)


def _well_formed_nik(value: Any) -> TypeGuard[str]:
    return isinstance(value, str) and len(value) == 16 and value.isascii() and value.isdigit()


mask_nik = mask_nik_for_owner  # `3201**********01` (portal.md)


def wave_entry(view: WaveView) -> dict[str, Any]:
    """One wave of `/api/me`: outcome and reason exactly as `wave export` gives them."""
    if not view.announced:
        return {"wave": view.wave_id, "announced": False}
    outcome, reason = outcome_of(view.state or "", view.reason, view.pending_stage)
    entry: dict[str, Any] = {
        "wave": view.wave_id,
        "announced": True,
        "outcome": str(outcome),
        "reason": str(reason),
        "message": view.message,
    }
    if outcome == "CREDITED":
        entry["card_number_masked"] = mask_card(view.card_number)
        entry["balance"] = int(view.applied_amount or 0)
        entry["credited_at"] = (
            words.to_wib(view.credited_at).isoformat() if view.credited_at else None
        )
        if view.lifecycle is not None:
            entry["lifecycle"] = view.lifecycle
    return entry


class Portal:
    """What one portal process holds: its store, its code sender, its templates."""

    def __init__(self, settings: PortalSettings, store: Store, sender: CodeSender | None):
        self.settings = settings
        self.store = store
        self.sender = sender
        self.secure = settings.portal_secure_cookie
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.css = (HERE / "static" / "style.css").read_bytes()

    # -------------------------------------------------------------- shared logic
    def ask_code(self, nik: str):
        """Counts the request and, for a registered NIK with a phone, queues the code."""
        decision = self.store.request_code(nik)
        if decision.allowed:
            registered, phone = self.store.is_registered_phone(nik)
            code = decision.code  # set whenever the request is allowed
            if registered and phone and code and self.sender is not None:
                self.sender.submit(phone, code)
        return decision

    def sign_in(self, nik: str, code: str) -> tuple[Verification, str]:
        """Checks the code and, when right, starts a session (its token, else ""): in one
        worker thread, since each hop to a thread and back costs as much as a write."""
        result = self.store.verify_code(nik, code)
        return result, (self.store.create_session(nik) if result.ok else "")

    def survey_state(self, nik: str, k: int) -> tuple[str, WaveView | None]:
        """Survey k of the signed-in person: ("OPEN", the entry it is open in), or its
        status elsewhere ("ANSWERED"/"PAID": answered; anything else: not open)."""
        seen = "LOCKED"
        for view in self.store.person_view(nik):
            for survey in (view.lifecycle or {}).get("surveys", []):
                if survey["survey"] != k:
                    continue
                if survey["status"] == "OPEN":
                    return "OPEN", view
                if survey["status"] in ("ANSWERED", "PAID"):
                    seen = "ANSWERED"
        return seen, None

    def answer_survey(self, nik: str, k: int, body: Any) -> str:
        """`answered`, `already_answered`, `not_open` or `invalid` (portal.md, "Surveys"):
        an answered survey is refused whatever the body; a survey not open is not found."""
        status, view = self.survey_state(nik, k)
        if status == "ANSWERED":
            return "already_answered"
        if view is None or view.registrant_id is None:
            return "not_open"
        answers = lifecycle.validate_answers(body)
        if answers is None:
            return "invalid"
        stored = self.store.answer_survey(view.registrant_id, k, answers)
        return "answered" if stored else "already_answered"

    def is_secure(self, request: Request) -> bool:
        """Secure when the settings say so (`prakerja portal` decides by host and flags),
        and always for a request that came over https, through a trusted proxy or not."""
        return self.secure or request.scope.get("scheme") == "https"

    def cookie(self, token: str, request: Request) -> str:
        secure = "; Secure" if self.is_secure(request) else ""
        return f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/{secure}"

    def expired_cookie(self, request: Request) -> str:
        secure = "; Secure" if self.is_secure(request) else ""
        return f"{COOKIE}=; Max-Age=0; HttpOnly; SameSite=Strict; Path=/{secure}"

    def render(self, template: str, status: int = 200, /, **context: Any) -> Response:
        # Positional-only: the context has a `name` of its own (the person's).
        html = self.templates.get_template(template).render(**context)
        return Response(html, status_code=status, media_type="text/html; charset=utf-8")


def same_origin(request: Request) -> bool:
    """A state-changing request must come from the portal's own pages (portal.md).

    Browsers that matter send `Origin` or `Sec-Fetch-Site` on every POST. A request with
    neither is taken only as JSON: no cross-site form can send `application/json` without
    a CORS preflight, which this server never grants, while forms can send the other
    types from any page (in an old browser, with the person's cookie).
    """
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        return origin in (f"{request.url.scheme}://{host}", f"http://{host}", f"https://{host}")
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    media_type = request.headers.get("content-type", "").split(";", 1)[0]
    return media_type.strip().lower() == JSON


async def _body_json(request: Request) -> dict | None:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        return None
    return body if isinstance(body, dict) else None


def create_app(settings: PortalSettings | None = None) -> FastAPI:
    settings = settings or PortalSettings()
    given = settings.portal_secret
    state: dict[str, Portal] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine = make_portal_engine(settings.database_url, settings)
        # Without PRAKERJA_PORTAL_SECRET, the one kept in the program database: every
        # process and restart then hashes NIKs and codes alike (portal.md).
        secret = given.get_secret_value().encode() if given else stored_secret(engine)
        store = Store(
            engine,
            secret,
            guess_alert=settings.portal_guess_alert,
            on_guessing=_guessing_alert,
        )
        sender = _build_sender(settings)
        state["portal"] = Portal(settings, store, sender)
        try:
            yield
        finally:
            if sender is not None:
                sender.close()
            store.close()

    app = FastAPI(
        title="Prakerja dashboard",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def portal() -> Portal:
        return state["portal"]

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Response:
        return _json({"error": "internal_error"}, 500)  # logged by SecurityHeaders

    # ------------------------------------------------------------------ JSON API
    @app.post("/api/login")
    async def api_login(request: Request) -> Response:
        if not same_origin(request):
            return _json({"error": "forbidden"}, 403)
        body = await _body_json(request)
        nik = body.get("nik") if body else None
        if not _well_formed_nik(nik):
            return _json({"error": "invalid_nik"}, 422)
        decision = await run_in_threadpool(portal().ask_code, nik)
        if not decision.allowed:
            return _json(
                {"error": "too_many_requests"},
                429,
                {"Retry-After": str(decision.retry_after)},
            )
        return _json({"status": "code_sent"}, 202)

    @app.post("/api/login/verify")
    async def api_verify(request: Request) -> Response:
        if not same_origin(request):
            return _json({"error": "forbidden"}, 403)
        body = await _body_json(request)
        nik = body.get("nik") if body else None
        code = body.get("code") if body else None
        if not _well_formed_nik(nik):
            return _json({"error": "invalid_code"}, 401)
        code = code if isinstance(code, str) else ""
        result, token = await run_in_threadpool(portal().sign_in, nik, code)
        if result.locked:
            return _json(
                {"error": "too_many_requests"}, 429, {"Retry-After": str(result.retry_after)}
            )
        if not result.ok:
            return _json({"error": "invalid_code"}, 401)
        return _json({"status": "ok"}, 200, {"Set-Cookie": portal().cookie(token, request)})

    # Signed-in reads on SQLite run on the event loop: they read a fraction of a
    # millisecond from the page cache, and the hop to a worker thread and back cost more
    # than the reads (bench/portal_load.py on the 6M-registrant wave: CPU per /api/me
    # 1.0 -> 0.64 ms, and with uvloop and httptools 2,200 -> 4,200 reads/s on 2 cores).
    # A session due a write (last_seen moved, or its end), and every PostgreSQL read (a
    # network round trip), still go to a thread, where waiting does not hold up the loop.
    def me_response(p: Portal, nik: str | None) -> Response:
        if nik is None:
            return _json({"error": "not_signed_in"}, 401)
        views = p.store.person_view(nik)
        return _json({"nik_masked": mask_nik(nik), "waves": [wave_entry(v) for v in views]})

    @app.get("/api/me")
    async def api_me(request: Request) -> Response:
        p = portal()
        token = request.cookies.get(COOKIE)
        if p.store.sqlite:
            decided, nik = p.store.session_nik_without_write(token)
            if decided:
                return me_response(p, nik)
        return await run_in_threadpool(lambda: me_response(p, p.store.session_nik(token)))

    @app.post("/api/logout")
    async def api_logout(request: Request) -> Response:
        if not same_origin(request):
            return _json({"error": "forbidden"}, 403)
        await run_in_threadpool(portal().store.end_session, request.cookies.get(COOKIE))
        return Response(status_code=204, headers={"Set-Cookie": portal().expired_cookie(request)})

    # ------------------------------------------------------------------ pages
    @app.get("/")
    def page_signin(request: Request, lang: str | None = None) -> Response:
        lang = words.lang_of(lang)
        if portal().store.session_nik(request.cookies.get(COOKIE)) is not None:
            return RedirectResponse(f"/status?lang={lang}", status_code=303)
        return portal().render("signin.html", **_page(lang, step="nik"))

    @app.post("/signin")
    async def page_ask_code(request: Request) -> Response:
        form = await request.form()
        lang = words.lang_of(_field(form, "lang"))
        if not same_origin(request):
            return portal().render("signin.html", 403, **_page(lang, step="nik", error="forbidden"))
        nik = _field(form, "nik").strip().replace(" ", "")
        if not _well_formed_nik(nik):
            return portal().render("signin.html", 422, **_page(lang, step="nik", error="bad_nik"))
        decision = await run_in_threadpool(portal().ask_code, nik)
        if not decision.allowed:
            return _too_many_page(portal(), lang, "nik", decision.retry_after, nik)
        return portal().render("signin.html", 202, **_page(lang, step="code", nik=nik))

    @app.post("/signin/verify")
    async def page_verify(request: Request) -> Response:
        form = await request.form()
        lang = words.lang_of(_field(form, "lang"))
        if not same_origin(request):
            return portal().render("signin.html", 403, **_page(lang, step="nik", error="forbidden"))
        nik = _field(form, "nik")
        code = _field(form, "code").strip()
        if not _well_formed_nik(nik):
            return portal().render("signin.html", 422, **_page(lang, step="nik", error="bad_nik"))
        result, token = await run_in_threadpool(portal().sign_in, nik, code)
        if result.locked:
            return _too_many_page(portal(), lang, "code", result.retry_after, nik)
        if not result.ok:
            return portal().render(
                "signin.html", 401, **_page(lang, step="code", nik=nik, error="bad_code")
            )
        response = RedirectResponse(f"/status?lang={lang}", status_code=303)
        response.headers["Set-Cookie"] = portal().cookie(token, request)
        return response

    def status_page(p: Portal, nik: str | None, lang: str) -> Response:
        if nik is None:
            return RedirectResponse(f"/?lang={lang}", status_code=303)
        views = p.store.person_view(nik)
        name = next((v.full_name for v in reversed(views) if v.full_name), None)
        waves = [_wave_card(v, lang) for v in views]
        return p.render(
            "status.html", **_page(lang, nik_masked=mask_nik(nik), name=name, waves=waves)
        )

    @app.get("/status")
    async def page_status(request: Request, lang: str | None = None) -> Response:
        lang = words.lang_of(lang)
        p = portal()
        token = request.cookies.get(COOKIE)
        if p.store.sqlite:
            decided, nik = p.store.session_nik_without_write(token)
            if decided:
                return status_page(p, nik, lang)  # on the event loop, as /api/me
        return await run_in_threadpool(lambda: status_page(p, p.store.session_nik(token), lang))

    # ------------------------------------------------------------------ surveys
    @app.post("/api/surveys/{k}")
    async def api_survey(request: Request, k: str) -> Response:
        if not same_origin(request):
            return _json({"error": "forbidden"}, 403)
        p = portal()
        nik = await run_in_threadpool(p.store.session_nik, request.cookies.get(COOKIE))
        if nik is None:
            return _json({"error": "not_signed_in"}, 401)
        number = _survey_number(k)
        if number is None:
            return _json({"error": "not_found"}, 404)
        body = await _body_json(request)
        outcome = await run_in_threadpool(p.answer_survey, nik, number, body)
        status, answer = SURVEY_ANSWERS[outcome]
        return _json(answer, status)

    @app.get("/survey/{k}")
    async def page_survey(request: Request, k: str, lang: str | None = None) -> Response:
        lang = words.lang_of(lang)
        p = portal()
        nik = await run_in_threadpool(p.store.session_nik, request.cookies.get(COOKIE))
        if nik is None:
            return RedirectResponse(f"/?lang={lang}", status_code=303)
        number = _survey_number(k)
        state, view = await run_in_threadpool(p.survey_state, nik, number) if number else ("", None)
        if state == "ANSWERED":
            return _survey_message(p, lang, number, "survey_already", 409)
        if view is None or number is None:
            return _survey_message(p, lang, number, "survey_not_open", 404)
        return p.render("survey.html", **_survey_page(lang, number, view, {}))

    @app.post("/survey/{k}")
    async def page_answer_survey(request: Request, k: str) -> Response:
        form = await request.form()
        lang = words.lang_of(_field(form, "lang"))
        p = portal()
        if not same_origin(request):
            return p.render("signin.html", 403, **_page(lang, step="nik", error="forbidden"))
        nik = await run_in_threadpool(p.store.session_nik, request.cookies.get(COOKIE))
        if nik is None:
            return RedirectResponse(f"/?lang={lang}", status_code=303)
        number = _survey_number(k)
        if number is None:
            return _survey_message(p, lang, None, "survey_not_open", 404)
        fields = {name: _field(form, name) for name in SURVEY_FIELDS}
        body = lifecycle.answers_from_form(fields)
        outcome = await run_in_threadpool(p.answer_survey, nik, number, body)
        if outcome == "answered":
            return _survey_message(p, lang, number, "survey_done", 201)
        if outcome == "already_answered":
            return _survey_message(p, lang, number, "survey_already", 409)
        if outcome == "not_open":
            return _survey_message(p, lang, number, "survey_not_open", 404)
        state, view = await run_in_threadpool(p.survey_state, nik, number)
        if view is None:
            return _survey_message(p, lang, number, "survey_not_open", 404)
        context = _survey_page(lang, number, view, fields, error="survey_invalid")
        return p.render("survey.html", 422, **context)

    @app.post("/logout")
    async def page_logout(request: Request) -> Response:
        form = await request.form()
        lang = words.lang_of(_field(form, "lang"))
        if not same_origin(request):
            return portal().render("signin.html", 403, **_page(lang, step="nik", error="forbidden"))
        await run_in_threadpool(portal().store.end_session, request.cookies.get(COOKIE))
        response = RedirectResponse(f"/?lang={lang}", status_code=303)
        response.headers["Set-Cookie"] = portal().expired_cookie(request)
        return response

    @app.get("/static/style.css")
    def stylesheet() -> Response:
        return Response(
            portal().css,
            media_type="text/css; charset=utf-8",
            headers={"Cache-Control": "public, max-age=3600"},
        )

    return SecurityHeaders(BodyLimit(app))  # type: ignore[return-value]


SURVEY_ANSWERS: dict[str, tuple[int, dict[str, str]]] = {
    "answered": (201, {"status": "answered"}),
    "already_answered": (409, {"error": "already_answered"}),
    "not_open": (404, {"error": "not_found"}),
    "invalid": (422, {"error": "invalid_answer"}),
}
SURVEY_FIELDS = (*lifecycle.CHOICES, "comment")


def _survey_number(k: str) -> int | None:
    """Survey numbers are small positive integers; anything else is not found."""
    return int(k) if k.isascii() and k.isdigit() and len(k) <= 2 and int(k) > 0 else None


def _survey_page(
    lang: str, k: int, view: WaveView, chosen: dict[str, str], error: str | None = None
) -> dict[str, Any]:
    amount = view.survey_amount
    questions = [
        {
            "name": name,
            "label": words.SURVEY_QUESTIONS[name][lang],
            "choices": [
                {"value": value, "label": label[lang], "checked": chosen.get(name) == value}
                for value, label in words.SURVEY_CHOICES[name].items()
            ],
        }
        for name in lifecycle.CHOICES
    ]
    return _page(
        lang,
        k=k,
        questions=questions,
        comment_label=words.SURVEY_QUESTIONS["comment"][lang],
        comment=chosen.get("comment", "")[: lifecycle.COMMENT_MAX * 2],
        comment_max=lifecycle.COMMENT_MAX,
        amount=words.rupiah(amount) if amount else None,
        error=error,
    )


def _survey_message(p: Portal, lang: str, k: int | None, key: str, status: int) -> Response:
    return p.render("survey_message.html", status, **_page(lang, k=k, key=key))


def _field(form, name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _minutes(seconds: int) -> int:
    return max(1, -(-seconds // 60))


def _too_many_page(p: Portal, lang: str, step: str, retry_after: int, nik: str) -> Response:
    response = p.render(
        "signin.html",
        429,
        **_page(lang, step=step, nik=nik, error="too_many", minutes=_minutes(retry_after)),
    )
    response.headers["Retry-After"] = str(retry_after)
    return response


def _page(lang: str, **context: Any) -> dict[str, Any]:
    other = "en" if lang == "id" else "id"

    def t(key: str, **values: Any) -> str:
        return words.text(key, lang, **values)

    return {"lang": lang, "other_lang": other, "t": t, **context}


def _wave_card(view: WaveView, lang: str) -> dict[str, Any]:
    entry = wave_entry(view)
    card: dict[str, Any] = {"wave": entry["wave"], "announced": entry["announced"]}
    if not entry["announced"]:
        return card
    headline, what, next_step = words.explain(entry["outcome"], entry["reason"], lang)
    card.update(
        outcome=entry["outcome"],
        reason=entry["reason"],
        headline=headline,
        what=what,
        next_step=next_step,
        message=words.message_in(entry["message"], lang),
    )
    if entry["outcome"] == "CREDITED":
        card.update(
            card_number_masked=entry["card_number_masked"],
            balance=words.rupiah(entry["balance"]),
            credited_at=words.wib_text(view.credited_at, lang) if view.credited_at else None,
        )
        if "lifecycle" in entry:
            card["life"] = _life(entry["lifecycle"], lang)
    return card


def _life(life: dict[str, Any], lang: str) -> dict[str, Any]:
    """The lifecycle of a credited wave in plain words (portal.md, "After the credit")."""
    headline, what, next_step = words.lifecycle_explain(life["state"], life["reason"], lang)
    shown: dict[str, Any] = {
        "state": life["state"],
        "headline": headline,
        "what": what,
        "next_step": next_step,
        "balance_left": words.rupiah(life["balance_left"]),
        "deadline": words.date_text(life["training_deadline"], lang),
    }
    if life["state"] == "AWAITING_TRAINING":
        left = (date.fromisoformat(life["training_deadline"]) - lifecycle.today_wib()).days
        shown["days_left"] = (
            words.text("days_left", lang, n=left)
            if left > 0
            else words.text("last_day" if left == 0 else "deadline_passed", lang)
        )
    elif life["state"] == "REVOKED":
        shown["days_left"] = words.text("deadline_passed", lang)
    else:  # a first training was bought in time
        shown["days_left"] = words.text("deadline_met", lang)
    shown["payments"] = [_payment_line(p, lang) for p in life["payments"]]
    shown["surveys"] = [
        {
            "k": s["survey"],
            "status": s["status"],
            "text": words.SURVEY_STATUS[s["status"]][lang],
        }
        for s in life["surveys"]
    ]
    return shown


def _payment_line(payment: dict[str, Any], lang: str) -> dict[str, Any]:
    label = "incentive_k" if payment["benefit"] == "incentive" else "survey_payment_k"
    line: dict[str, Any] = {
        "label": words.text(label, lang, k=payment["installment"]),
        "amount": words.rupiah(payment["amount"]),
        "status": payment["status"],
        "status_text": words.PAYMENT_STATUS[payment["status"]][lang],
    }
    if payment["status"] == "PAID" and payment.get("paid_at"):
        line["when_label"] = words.text("paid_on", lang)
        line["when"] = words.wib_iso_text(payment["paid_at"], lang)
    else:
        line["when_label"] = words.text("due_on", lang)
        line["when"] = words.date_text(payment["due"], lang)
    if payment["status"] in ("STOPPED", "FAILED"):
        line["means"], line["todo"] = words.payment_reason(payment.get("reason", ""), lang)
    return line


def _build_sender(settings: PortalSettings) -> CodeSender | None:
    from partners.config import load_partners_config
    from partners.notifier import NotifierClient

    config = (
        load_partners_config(settings.partners) if settings.partners else (load_partners_config())
    )
    notifier = NotifierClient(config.notifier)
    return CodeSender(
        notifier,
        window_s=settings.portal_code_window_ms / 1000,
        on_failure=_partner_failed,
    )


def _guessing_alert(guessing: Guessing) -> None:
    """Wrong codes above PRAKERJA_PORTAL_GUESS_ALERT a minute (this process won the claim
    of every process's alert): a log line, and `prakerja.portal.guessing` where a Prefect
    API is configured. Counts only: which NIKs were guessed is nobody's business here."""
    log.warning(
        "portal: %d wrong sign-in codes in a minute, above %d (guessing)",
        guessing.failures,
        guessing.threshold,
    )
    try:
        from prefect.settings import get_current_settings

        if not get_current_settings().api.url:
            return
        from prefect.events import emit_event

        emit_event(
            event=names.PORTAL_GUESSING,
            resource={
                "prefect.resource.id": names.PORTAL_RESOURCE,
                "prefect.resource.name": "dashboard",
            },
            payload=guessing.payload(),
        )
    except Exception as exc:  # an alert that cannot be sent must not stop sign-ins
        log.warning("portal: could not emit %s: %s", names.PORTAL_GUESSING, type(exc).__name__)


def _partner_failed(failure, items: int) -> None:
    """The usual `prakerja.partner.failed` event, where a Prefect API is configured."""
    try:
        from prefect.settings import get_current_settings

        if not get_current_settings().api.url:
            return  # no Prefect server to alert through: the log line is the record
        from prefect.events import emit_event

        emit_event(
            event=names.PARTNER_FAILED,
            resource={
                "prefect.resource.id": names.partner_resource(failure.partner_id),
                "prefect.resource.name": failure.partner_id,
            },
            payload={
                "wave_id": "dashboard",
                "stage": "portal-login",
                "partner": failure.partner_id,
                "items": items,
                "error_class": failure.error_class,
                "needs_person": failure.needs_person,
            },
        )
    except Exception as exc:  # an alert that cannot be sent must not stop sign-ins
        log.warning("portal: could not emit prakerja.partner.failed: %s", type(exc).__name__)


def app_from_env():
    """For `uvicorn --factory` and `prakerja portal --workers N`: settings from the env."""
    return create_app(PortalSettings())
