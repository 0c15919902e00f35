"""Errors of `aios serve` as OpenAI's error object, `{"error": {"message", "type", "param",
"code"}}`: `ApiError` raised by a handler, and the app's handlers that turn it, FastAPI's
validation errors (400) and Starlette's HTTP errors (404, 405, ...) into that body."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class ApiError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.body, self.headers = status, error_body(message, type_, param, code), headers


async def _api_error(request, exc: ApiError):
    return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)


async def _invalid(request, exc: RequestValidationError):
    errs = exc.errors()
    first = errs[0] if errs else {}
    where = ".".join(str(x) for x in first.get("loc", ()) if x != "body") or None
    if first.get("type") == "json_invalid":
        msg = "the request body is not valid JSON"
    else:
        msg = f"{where or 'body'}: {first.get('msg', 'invalid')}"
    return JSONResponse(error_body(msg, param=where), status_code=400)


async def _http(request, exc: StarletteHTTPException):
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return JSONResponse(error_body(str(exc.detail), kind), status_code=exc.status_code)


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, _api_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(StarletteHTTPException, _http)
