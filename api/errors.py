"""The error hierarchy and its one HTTP mapping: every failure an outsider can cause is a clear 4xx."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException


class YuntingError(Exception):
    """Base of every error we raise on purpose; `code` is machine-readable, `message` is for people."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: int | None = None, **extra: object
    ) -> None:
        super().__init__(message)
        self.message = message
        # Seconds after which trying again makes sense (429, a busy 503): sent as Retry-After.
        self.retry_after = retry_after
        self.extra = extra  # more machine-readable fields for the error body (e.g. the running job's id)
        if code is not None:
            self.code = code


class BadRequest(YuntingError):
    status_code = 400


class NotAuthenticated(YuntingError):
    status_code = 401
    code = "not_authenticated"


class NotPermitted(YuntingError):
    status_code = 403
    code = "not_permitted"


class ResourceNotFound(YuntingError):
    status_code = 404
    code = "not_found"


class Conflict(YuntingError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(YuntingError):
    status_code = 413
    code = "payload_too_large"


class TooManyRequests(YuntingError):
    """Over an abuse limit (api/ratelimit.py): try again after `retry_after` seconds."""

    status_code = 429
    code = "rate_limited"


class Unprocessable(YuntingError):
    """Well-formed, but the content can't be accepted (e.g. training text with a control character)."""

    status_code = 422
    code = "unprocessable"


class UpstreamUnavailable(YuntingError):
    """A dependency we call (WeChat, Rasa) failed in a way the caller cannot fix."""

    status_code = 503
    code = "upstream_unavailable"


def _body(code: str, message: str, **extra: object) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


def install_error_handlers(app: FastAPI) -> None:
    """Map our errors, validation errors and HTTP errors to one JSON shape."""

    @app.exception_handler(YuntingError)
    async def _yunting(_: Request, exc: YuntingError) -> JSONResponse:
        extra = dict(getattr(exc, "extra", {}))
        retry_after = exc.retry_after
        if retry_after is None:
            return JSONResponse(_body(exc.code, exc.message, **extra), status_code=exc.status_code)
        return JSONResponse(
            _body(exc.code, exc.message, retry_after=retry_after, **extra),
            status_code=exc.status_code,
            headers={"Retry-After": str(retry_after)},
        )

    @app.exception_handler(DBAPIError)
    async def _database(_: Request, exc: DBAPIError) -> JSONResponse:
        if not exc.connection_invalidated:
            raise exc  # a bug or a constraint: the server error it is, logged as one
        # The database connection broke under the request (a restart, a failover): the pool starts afresh.
        body = _body("database_unavailable", "the record is briefly unavailable, please retry", retry_after=1)
        return JSONResponse(body, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(err.get("loc", ())), "msg": err.get("msg", "")} for err in exc.errors()]
        return JSONResponse(
            _body("invalid_request", "request body or parameters are invalid", details=details),
            status_code=422,
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            _body(f"http_{exc.status_code}", str(exc.detail)),
            status_code=exc.status_code,
            headers=getattr(exc, "headers", None),
        )
