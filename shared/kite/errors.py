"""Kite's error envelope as a Python exception, so handlers can ``raise`` what Kite would answer.

Only error types the official SDK defines are used, so every error reaches a client as the SDK's
own exception class (an unknown type would degrade to ``GeneralException``).
"""

from __future__ import annotations


class KiteError(Exception):
    """An error Kite answers with ``{"status": "error", "error_type", "message"}``."""

    def __init__(self, error_type: str, message: str, status: int) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.status = status

    def body(self) -> dict[str, object]:
        return {"status": "error", "message": self.message, "data": None,
                "error_type": self.error_type}


def input_error(message: str) -> KiteError:
    return KiteError("InputException", message, 400)


def token_error(message: str = "Incorrect `api_key` or `access_token`.") -> KiteError:
    return KiteError("TokenException", message, 403)


def order_error(message: str) -> KiteError:
    return KiteError("OrderException", message, 400)


def permission_error(message: str) -> KiteError:
    return KiteError("PermissionException", message, 403)


def too_many_requests() -> KiteError:
    return KiteError("NetworkException", "Too many requests", 429)


def not_found(message: str = "Route not found") -> KiteError:
    return KiteError("GeneralException", message, 404)


# HTTP 5xx answers as Kite's gateway gives them (DESIGN: a read may be retried, a write reconciled).
SERVER_ERRORS: dict[int, tuple[str, str]] = {
    500: ("GeneralException", "Something unexpected went wrong"),
    502: ("DataException", "The backend OMS is down and the API is unable to communicate with it"),
    503: ("NetworkException", "Service unavailable; the API is down"),
    504: ("NetworkException", "Gateway timeout; the API is unreachable"),
}


def server_error(code: int) -> KiteError:
    error_type, message = SERVER_ERRORS.get(code, SERVER_ERRORS[500])
    return KiteError(error_type, message, code)
