"""A small client for Metabase's REST API.

One `requests.Session` per client. Every call goes through `MetabaseClient._request`, which
sets a timeout, checks the status and turns failures into `MetabaseAPIError` carrying the
status, the method and endpoint and Metabase's own message, never the API key or session
token. Transient failures (429, 502, 503, 504, dropped connections) are retried with
exponential backoff by urllib3, for idempotent methods and for the few POSTs that only read
or trigger (exports, schema sync, login); a POST that creates something is never re-sent,
because the first attempt may have succeeded (provisioning finds it by name next time).

The Metabase version is read once, from `GET /api/session/properties`, and decides the two
things that changed under us (see contracts/metabase/CHANGES.md):
export parameters moved from the query string to the body in 0.53, and cards return MBQL 5
queries since 0.57.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from cohortcast.errors import ConfigError, MetabaseError

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 502, 503, 504})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
# POSTs that read or trigger and can be sent twice without harm.
_RETRY_SAFE_POST = re.compile(
    r"^/api/(?:session/?|database/\d+/sync_schema|card/\d+/query(?:/[a-z]+)?|dataset/?[a-z]*)$"
)
_VERSION_TAG = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")
CONNECT_TIMEOUT_SECONDS = 10.0
MAX_RETRY_AFTER_SECONDS = 60.0
SESSION_HEADER = "X-Metabase-Session"
API_KEY_HEADER = "x-api-key"
_MAX_MESSAGE_CHARS = 500


class MetabaseAPIError(MetabaseError):
    """Metabase answered with an error, or did not answer in time."""

    def __init__(
        self,
        message: str,
        *,
        method: str,
        endpoint: str,
        status: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, step="metabase")
        self.method = method
        self.endpoint = endpoint
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class MetabaseSettings:
    """Where Metabase is and how to sign in. Secrets stay out of `repr` and logs."""

    url: str
    api_key: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_seconds: float = 30.0
    export_timeout_seconds: float = 600.0
    retries: int = 4
    backoff_factor: float = 0.5

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise ConfigError(
                f"METABASE_URL {self.url!r} must start with http:// or https:// "
                "(e.g. https://metabase.example.com)"
            )
        if not self.api_key and not (self.username and self.password):
            raise ConfigError(
                "no Metabase credentials: set METABASE_API_KEY, or METABASE_USERNAME and "
                "METABASE_PASSWORD"
            )

    @property
    def base_url(self) -> str:
        return self.url.rstrip("/")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> MetabaseSettings:
        """Read METABASE_URL and METABASE_API_KEY or METABASE_USERNAME/METABASE_PASSWORD."""
        env = os.environ if environ is None else environ
        missing = missing_settings(env)
        if missing:
            raise ConfigError(f"Metabase is not configured: set {'; '.join(missing)}")
        url = env.get("METABASE_URL", "").strip()
        return cls(
            url=url,
            api_key=env.get("METABASE_API_KEY") or None,
            username=env.get("METABASE_USERNAME") or None,
            password=env.get("METABASE_PASSWORD") or None,
        )


def missing_settings(env: Mapping[str, str]) -> list[str]:
    """What is missing from the environment to reach Metabase, all at once."""
    missing = []
    if not env.get("METABASE_URL", "").strip():
        missing.append("METABASE_URL (your Metabase's address)")
    if not env.get("METABASE_API_KEY") and not (
        env.get("METABASE_USERNAME") and env.get("METABASE_PASSWORD")
    ):
        missing.append("METABASE_API_KEY, or METABASE_USERNAME and METABASE_PASSWORD")
    return missing


@dataclass(frozen=True)
class MetabaseVersion:
    """The server's version tag and the release number that API changes are keyed on.

    Tags look like `v0.57.3` (open source) or `v1.57.3` (enterprise); the second number is
    the release. An unparseable tag (a development build) is taken as the newest release.
    """

    tag: str
    release: int | None

    @classmethod
    def parse(cls, tag: str) -> MetabaseVersion:
        match = _VERSION_TAG.match(tag.strip())
        return cls(tag=tag, release=int(match.group(2)) if match else None)

    def at_least(self, release: int) -> bool:
        return self.release is None or self.release >= release

    @property
    def export_params_in_body(self) -> bool:
        """Since 0.53 the export endpoints read their parameters from the body only."""
        return self.at_least(53)

    @property
    def returns_mbql5(self) -> bool:
        """Since 0.57 cards are stored and returned as MBQL 5."""
        return self.at_least(57)


class _MethodAwareAdapter(HTTPAdapter):
    """Retries idempotent methods, and POSTs only on endpoints that are safe to repeat."""

    def __init__(self, retry: Retry, safe_post_retry: Retry) -> None:
        super().__init__(max_retries=retry)
        self._safe_post = HTTPAdapter(max_retries=safe_post_retry)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        path = (request.path_url or "").split("?", 1)[0]
        if request.method == "POST" and _RETRY_SAFE_POST.match(path):
            return self._safe_post.send(request, *args, **kwargs)
        return super().send(request, *args, **kwargs)

    def close(self) -> None:
        self._safe_post.close()
        super().close()


class _CappedRetry(Retry):
    """Honours `Retry-After`, but never sleeps longer than MAX_RETRY_AFTER_SECONDS."""

    def get_retry_after(self, response: Any) -> float | None:
        seconds = super().get_retry_after(response)
        return None if seconds is None else min(seconds, MAX_RETRY_AFTER_SECONDS)


def retry_policy(settings: MetabaseSettings, methods: frozenset[str]) -> Retry:
    """Backoff on 429/502/503/504 and dropped connections, for `methods` only."""
    return _CappedRetry(
        total=settings.retries,
        connect=settings.retries,
        read=settings.retries,
        status=settings.retries,
        other=0,
        backoff_factor=settings.backoff_factor,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=methods,
        respect_retry_after_header=True,
        raise_on_status=False,
        raise_on_redirect=False,
    )


def unwrap(payload: Any) -> Any:
    """Lists arrive bare or as `{"data": [...], "total": ...}`; return the bare list."""
    if isinstance(payload, dict) and isinstance(payload.get("data"), list):
        return payload["data"]
    return payload


class MetabaseClient:
    """Talks to one Metabase. Not shared between threads."""

    def __init__(
        self, settings: MetabaseSettings, *, session: requests.Session | None = None
    ) -> None:
        self.settings = settings
        self._session = session or requests.Session()
        adapter = _MethodAwareAdapter(
            retry_policy(settings, IDEMPOTENT_METHODS),
            retry_policy(settings, IDEMPOTENT_METHODS | {"POST"}),
        )
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["Accept"] = "application/json"
        self._session.headers["User-Agent"] = "cohortcast"
        if settings.api_key:
            self._session.headers[API_KEY_HEADER] = settings.api_key
        self._session_token: str | None = None
        self._version: MetabaseVersion | None = None

    def __enter__(self) -> MetabaseClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    # Public helpers -----------------------------------------------------------------------

    @property
    def version(self) -> MetabaseVersion:
        """The server's version, read once per client."""
        if self._version is None:
            properties = self.get("/api/session/properties")
            raw = properties.get("version") if isinstance(properties, dict) else None
            tag = str(raw.get("tag", "")) if isinstance(raw, dict) else ""
            self._version = MetabaseVersion.parse(tag)
            if self._version.release is None:
                logger.warning(
                    "Metabase reports version %r; assuming the newest API", tag or "unknown"
                )
            else:
                logger.info("Metabase %s at %s", tag, self.settings.base_url)
        return self._version

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return unwrap(self._request("GET", path, params=params).json())

    def post(self, path: str, body: Any = None) -> Any:
        response = self._request("POST", path, json_body=body)
        return unwrap(response.json()) if response.content else None

    def put(self, path: str, body: Any) -> Any:
        response = self._request("PUT", path, json_body=body)
        return unwrap(response.json()) if response.content else None

    def export_card(
        self,
        card_id: int,
        export_format: str,
        parameters: list[dict[str, Any]] | None = None,
    ) -> requests.Response:
        """Stream a saved question's full result through the export endpoint.

        The query endpoint stops at 2,000 rows; the export endpoint does not. Values come
        unformatted (`format_rows` false). The caller reads and closes the response.
        """
        path = f"/api/card/{card_id}/query/{export_format}"
        options: dict[str, Any] = {"format_rows": False, "pivot_results": False}
        if parameters:
            options["parameters"] = parameters
        if self.version.export_params_in_body:
            return self._request(
                "POST",
                path,
                json_body=options,
                stream=True,
                timeout=self.settings.export_timeout_seconds,
            )
        query = {
            key: json.dumps(value) if isinstance(value, list) else str(value).lower()
            for key, value in options.items()
        }
        return self._request(
            "POST", path, params=query, stream=True, timeout=self.settings.export_timeout_seconds
        )

    def card_url(self, card_id: int) -> str:
        return f"{self.settings.base_url}/question/{card_id}"

    def dashboard_url(self, dashboard_id: int) -> str:
        return f"{self.settings.base_url}/dashboard/{dashboard_id}"

    def collection_url(self, collection_id: int) -> str:
        return f"{self.settings.base_url}/collection/{collection_id}"

    # The one place that talks HTTP --------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        stream: bool = False,
        timeout: float | None = None,
    ) -> requests.Response:
        if self.settings.api_key is None and self._session_token is None and not _is_login(path):
            self._login()
        response = self._send(method, path, params, json_body, stream, timeout)
        if response.status_code == 401 and self.settings.api_key is None and not _is_login(path):
            response.close()
            logger.info("Metabase session expired; signing in again")
            self._login()
            response = self._send(method, path, params, json_body, stream, timeout)
        if response.status_code >= 400:
            detail = self._scrub(_error_message(response))
            response.close()
            raise MetabaseAPIError(
                f"Metabase {method} {path} failed with HTTP {response.status_code}: {detail}"
                f"{_advice(response.status_code)}",
                method=method,
                endpoint=path,
                status=response.status_code,
                detail=detail,
            )
        if "/query" in path and _is_json(response):
            # Query endpoints answer 202 before the query runs, so a failed query arrives as
            # a success status with the error in the body.
            payload = response.json()
            if isinstance(payload, dict) and (
                payload.get("status") == "failed" or payload.get("error")
            ):
                detail = self._scrub(str(payload.get("error") or payload.get("status")))
                raise MetabaseAPIError(
                    f"Metabase {method} {path}: the query failed (HTTP {response.status_code}): "
                    f"{detail}",
                    method=method,
                    endpoint=path,
                    status=response.status_code,
                    detail=detail,
                )
        return response

    def _send(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        json_body: Any,
        stream: bool,
        timeout: float | None,
    ) -> requests.Response:
        read_timeout = timeout if timeout is not None else self.settings.timeout_seconds
        try:
            return self._session.request(
                method,
                self.settings.base_url + path,
                params=_query(params),
                json=json_body,
                stream=stream,
                timeout=(min(CONNECT_TIMEOUT_SECONDS, read_timeout), read_timeout),
            )
        except requests.Timeout as exc:
            raise MetabaseAPIError(
                f"Metabase {method} {path} did not answer within {read_timeout:g} s "
                f"(after {self.settings.retries} retries where safe); check that "
                f"{self.settings.base_url} is up, or raise the timeout",
                method=method,
                endpoint=path,
            ) from exc
        except requests.RequestException as exc:
            raise MetabaseAPIError(
                f"Metabase {method} {path} could not be reached at {self.settings.base_url} "
                f"({type(exc).__name__}); check METABASE_URL and the network",
                method=method,
                endpoint=path,
            ) from exc

    def _login(self) -> None:
        self._session.headers.pop(SESSION_HEADER, None)
        self._session_token = None
        response = self._request(
            "POST",
            "/api/session/",
            json_body={
                "username": self.settings.username or "",
                "password": self.settings.password or "",
            },
        )
        token = response.json().get("id")
        if not token:
            raise MetabaseAPIError(
                "Metabase POST /api/session/ returned no session id; check the user's login",
                method="POST",
                endpoint="/api/session/",
                status=response.status_code,
            )
        self._session_token = str(token)
        self._session.headers[SESSION_HEADER] = self._session_token
        logger.debug("signed in to Metabase as %s", self.settings.username)

    def _scrub(self, text: str) -> str:
        for secret in (self.settings.api_key, self.settings.password, self._session_token):
            if secret:
                text = text.replace(secret, "***")
        return text


def _is_login(path: str) -> bool:
    return path.rstrip("/") == "/api/session"


def _is_json(response: requests.Response) -> bool:
    return "json" in response.headers.get("Content-Type", "")


def _query(params: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Booleans as Metabase expects them (`true`/`false`); lists repeat the key."""
    if not params:
        return None
    encoded: dict[str, Any] = {}
    for key, value in params.items():
        if isinstance(value, bool):
            encoded[key] = "true" if value else "false"
        else:
            encoded[key] = value
    return encoded


def _error_message(response: requests.Response) -> str:
    """Metabase's own words: `message`, `error` or the `errors` map, else the text."""
    try:
        payload = response.json()
    except ValueError:
        text = response.text.strip() or response.reason or "no message"
        return text[:_MAX_MESSAGE_CHARS]
    if isinstance(payload, dict):
        for key in ("message", "error"):
            if isinstance(payload.get(key), str) and payload[key]:
                return str(payload[key])[:_MAX_MESSAGE_CHARS]
        if payload.get("errors"):
            return json.dumps(payload["errors"], sort_keys=True)[:_MAX_MESSAGE_CHARS]
    return json.dumps(payload)[:_MAX_MESSAGE_CHARS]


def _advice(status: int) -> str:
    if status == 401:
        return " (check METABASE_API_KEY, or METABASE_USERNAME and METABASE_PASSWORD)"
    if status == 403:
        return " (the Metabase user or API key lacks permission for this)"
    if status == 404:
        return " (no such object; check the id)"
    return ""
