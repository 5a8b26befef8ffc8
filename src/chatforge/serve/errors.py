"""Every error the server returns is JSON in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


class APIError(Exception):
    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, param=self.param, code=self.code, headers=self.headers)


def error_response(
    status: int, message: str, *, param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body = {"error": {"message": message, "type": _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error"),
                      "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, or an APIError that says exactly what is wrong with it."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise APIError(413, f"request body is {length} bytes; the limit is {max_bytes}", code="request_too_large")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise APIError(413, f"request body exceeds the limit of {max_bytes} bytes", code="request_too_large")
    if not body.strip():
        raise APIError(400, "request body is empty: expected a JSON object", code="empty_body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise APIError(400, f"request body is not valid UTF-8 (invalid byte at offset {err.start})", code="invalid_utf8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise APIError(400, f"malformed JSON: {err.msg} at line {err.lineno} column {err.colno}", code="invalid_json") from None
    except RecursionError:
        raise APIError(400, "the JSON is nested too deeply", code="invalid_json") from None
    if not isinstance(data, dict):
        raise APIError(400, f"request body must be a JSON object, got {type(data).__name__}", code="invalid_json")
    return data


def field_type(data: dict[str, Any], name: str, kinds: tuple[type, ...], what: str, *, required: bool = False) -> Any:
    if name not in data or data[name] is None:
        if required:
            raise APIError(400, f"missing required field '{name}'", param=name, code="missing_field")
        return None
    value = data[name]
    if isinstance(value, bool) and bool not in kinds:
        raise APIError(400, f"'{name}' must be {what}, got a boolean", param=name, code="invalid_type")
    if not isinstance(value, kinds):
        raise APIError(400, f"'{name}' must be {what}, got {type(value).__name__}", param=name, code="invalid_type")
    return value
