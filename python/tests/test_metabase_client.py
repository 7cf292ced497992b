"""The Metabase client against the local double: auth, retries, timeouts, errors, versions."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from metabase_double import MetabaseDouble, running_double
from urllib3 import HTTPResponse

from cohortcast.errors import ConfigError, MetabaseError
from cohortcast.metabase.client import (
    MetabaseAPIError,
    MetabaseClient,
    MetabaseSettings,
    MetabaseVersion,
    unwrap,
)

API_KEY = "mb_test_key_0123456789"
USER = "ada@example.com"
PASSWORD = "correct horse"


@pytest.fixture
def double() -> Iterator[MetabaseDouble]:
    with running_double() as server:
        yield server
        assert server.violations == [], "requests the published spec rejects"


def key_client(double: MetabaseDouble, **overrides: float) -> MetabaseClient:
    options: dict[str, float] = {"backoff_factor": 0.01, "timeout_seconds": 5.0}
    options.update(overrides)
    return MetabaseClient(MetabaseSettings(url=double.url, api_key=API_KEY, **options))  # type: ignore[arg-type]


def password_client(double: MetabaseDouble) -> MetabaseClient:
    return MetabaseClient(
        MetabaseSettings(url=double.url, username=USER, password=PASSWORD, backoff_factor=0.01)
    )


def test_settings_come_from_the_environment() -> None:
    settings = MetabaseSettings.from_environment(
        {"METABASE_URL": "https://mb.example.com/", "METABASE_API_KEY": "mb_key_xyz"}
    )
    assert settings.base_url == "https://mb.example.com"
    assert settings.api_key == "mb_key_xyz"
    assert "mb_key_xyz" not in repr(settings)
    with_user = MetabaseSettings.from_environment(
        {"METABASE_URL": "http://mb", "METABASE_USERNAME": "u", "METABASE_PASSWORD": "secret"}
    )
    assert with_user.username == "u"
    assert "secret" not in repr(with_user)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, r"METABASE_URL .*; METABASE_API_KEY, or METABASE_USERNAME and METABASE_PASSWORD"),
        ({"METABASE_URL": "http://mb"}, "METABASE_API_KEY"),
        ({"METABASE_URL": "http://mb", "METABASE_USERNAME": "u"}, "METABASE_PASSWORD"),
        ({"METABASE_URL": "mb.example.com", "METABASE_API_KEY": "k"}, "http://"),
    ],
)
def test_missing_settings_say_what_to_set(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        MetabaseSettings.from_environment(environ)


def test_api_key_goes_in_the_x_api_key_header(double: MetabaseDouble) -> None:
    with key_client(double) as client:
        user = client.get("/api/user/current")
    assert user["email"] == "ada@example.com"
    assert double.requests[-1].headers["x-api-key"] == API_KEY
    assert "x-metabase-session" not in double.requests[-1].headers


def test_password_login_then_session_header(double: MetabaseDouble) -> None:
    with password_client(double) as client:
        client.get("/api/user/current")
        client.get("/api/user/current")
    paths = [(request.method, request.path) for request in double.requests]
    assert paths == [
        ("POST", "/api/session/"),
        ("GET", "/api/user/current"),
        ("GET", "/api/user/current"),
    ]
    assert double.requests[0].body == {"username": USER, "password": PASSWORD}
    token = double.requests[1].headers["x-metabase-session"]
    assert token in double.sessions


def test_expired_session_logs_in_again_once(double: MetabaseDouble) -> None:
    with password_client(double) as client:
        client.get("/api/user/current")
        double.expire_sessions()
        client.get("/api/user/current")
    statuses = [(request.path, request.status) for request in double.requests]
    assert statuses == [
        ("/api/session/", 200),
        ("/api/user/current", 200),
        ("/api/user/current", 401),
        ("/api/session/", 200),
        ("/api/user/current", 200),
    ]


def test_second_401_after_login_again_is_an_error(double: MetabaseDouble) -> None:
    double.fail_next(401, count=2, path="/api/user/current")
    with password_client(double) as client, pytest.raises(MetabaseAPIError) as caught:
        client.get("/api/user/current")
    assert caught.value.status == 401
    assert [r.path for r in double.requests] == [
        "/api/session/",
        "/api/user/current",
        "/api/session/",
        "/api/user/current",
    ]


def test_retry_after_is_honoured_but_capped() -> None:
    from cohortcast.metabase.client import MAX_RETRY_AFTER_SECONDS, retry_policy

    settings = MetabaseSettings(url="http://mb", api_key=API_KEY)
    policy = retry_policy(settings, frozenset({"GET"}))

    assert policy.get_retry_after(HTTPResponse(headers={"Retry-After": "3600"})) == (
        MAX_RETRY_AFTER_SECONDS
    )
    assert policy.get_retry_after(HTTPResponse(headers={"Retry-After": "2"})) == 2


def test_wrong_password_is_an_error_without_the_password(double: MetabaseDouble) -> None:
    settings = MetabaseSettings(url=double.url, username=USER, password="wrong-pass-123")
    with MetabaseClient(settings) as client, pytest.raises(MetabaseAPIError) as caught:
        client.get("/api/user/current")
    assert caught.value.status == 401
    assert caught.value.endpoint == "/api/session/"
    assert "did not match stored password" in str(caught.value)
    assert "wrong-pass-123" not in str(caught.value)


def test_rejected_api_key_is_not_retried_and_not_shown(double: MetabaseDouble) -> None:
    settings = MetabaseSettings(url=double.url, api_key="mb_wrong_key_999")
    with MetabaseClient(settings) as client, pytest.raises(MetabaseError) as caught:
        client.get("/api/database/")
    assert "401" in str(caught.value)
    assert "METABASE_API_KEY" in str(caught.value)
    assert "mb_wrong_key_999" not in str(caught.value)
    assert len(double.requests) == 1


def test_burst_of_5xx_is_retried_for_get(double: MetabaseDouble) -> None:
    double.fail_next(503, count=2, path="/api/database")
    double.fail_next(429, count=1, path="/api/database")
    with key_client(double) as client:
        databases = client.get("/api/database/")
    assert [database["name"] for database in databases] == ["cohortcast"]
    assert [request.status for request in double.requests] == [503, 503, 429, 200]


def test_retries_give_up_with_status_and_message(double: MetabaseDouble) -> None:
    double.fail_next(502, count=10, path="/api/database")
    with key_client(double, retries=2) as client, pytest.raises(MetabaseAPIError) as caught:
        client.get("/api/database/")
    assert caught.value.status == 502
    assert caught.value.method == "GET"
    assert "GET /api/database/" in str(caught.value)
    assert "injected 502" in str(caught.value)
    assert len(double.requests) == 3  # the first try and two retries


def test_post_that_creates_is_not_retried(double: MetabaseDouble) -> None:
    double.fail_next(503, count=1, path="/api/collection")
    with key_client(double) as client, pytest.raises(MetabaseAPIError) as caught:
        client.post("/api/collection/", {"name": "Cohorts"})
    assert caught.value.status == 503
    assert len(double.requests) == 1
    assert double.state.collections == {}


def test_safe_post_is_retried(double: MetabaseDouble) -> None:
    double.fail_next(504, count=2, path="sync_schema")
    with key_client(double) as client:
        client.post(f"/api/database/{double.DATABASE_ID}/sync_schema")
    assert [request.status for request in double.requests] == [504, 504, 200]


def test_slow_answer_times_out_and_is_retried_for_get(double: MetabaseDouble) -> None:
    double.delay_next(1.5, count=1, path="/api/user/current")
    started = time.monotonic()
    with key_client(double, timeout_seconds=0.5) as client:
        user = client.get("/api/user/current")
    assert user["id"] == 1
    assert time.monotonic() - started < 1.5 + 1  # did not wait for the slow answer twice


def test_slow_answer_for_a_create_is_a_timeout_error(double: MetabaseDouble) -> None:
    double.delay_next(1.5, count=1, path="/api/collection")
    with (
        key_client(double, timeout_seconds=0.5) as client,
        pytest.raises(MetabaseAPIError, match=r"did not answer within 0.5 s"),
    ):
        client.post("/api/collection/", {"name": "Cohorts"})


def test_202_with_error_body_is_an_error(double: MetabaseDouble) -> None:
    card_id = double.add_saved_question(
        "members", [("customer_id", "Customer ID", "type/Text")], []
    )
    double.fail_query_next('ERROR: relation "analytics.gone" does not exist')
    with key_client(double) as client, pytest.raises(MetabaseAPIError) as caught:
        client.post(f"/api/card/{card_id}/query", {"ignore_cache": False})
    assert caught.value.status == 202
    assert 'relation "analytics.gone" does not exist' in str(caught.value)


def test_404_names_the_endpoint(double: MetabaseDouble) -> None:
    with key_client(double) as client, pytest.raises(MetabaseAPIError) as caught:
        client.get("/api/card/4242")
    assert caught.value.status == 404
    assert str(caught.value) == (
        "Metabase GET /api/card/4242 failed with HTTP 404: Not found. "
        "(no such object; check the id)"
    )


def test_unreachable_server_says_so() -> None:
    settings = MetabaseSettings(url="http://127.0.0.1:9", api_key=API_KEY, retries=0)
    with MetabaseClient(settings) as client, pytest.raises(MetabaseAPIError, match="reached"):
        client.get("/api/database/")


def test_list_wrapper_is_unwrapped() -> None:
    assert unwrap({"data": [1, 2], "total": 2}) == [1, 2]
    assert unwrap([1, 2]) == [1, 2]
    assert unwrap({"data": {"rows": []}}) == {"data": {"rows": []}}


def test_version_is_read_once(double: MetabaseDouble) -> None:
    with key_client(double) as client:
        assert client.version == MetabaseVersion("v0.57.3", 57)
        assert client.version.release == 57
    properties = [r for r in double.requests if r.path == "/api/session/properties"]
    assert len(properties) == 1


@pytest.mark.parametrize(
    ("tag", "release", "in_body", "mbql5"),
    [
        ("v0.50.5", 50, False, False),
        ("v0.53.0", 53, True, False),
        ("v1.56.2", 56, True, False),
        ("v0.57.3", 57, True, True),
        ("vUNKNOWN", None, True, True),
    ],
)
def test_version_decides_api_shape(
    tag: str, release: int | None, in_body: bool, mbql5: bool
) -> None:
    version = MetabaseVersion.parse(tag)
    assert version.release == release
    assert version.export_params_in_body is in_body
    assert version.returns_mbql5 is mbql5


def test_no_secret_reaches_the_log(
    double: MetabaseDouble, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with password_client(double) as client:
        client.get("/api/user/current")
        double.expire_sessions()
        client.get("/api/user/current")
    tokens = {request.headers.get("x-metabase-session") for request in double.requests} - {None}
    assert tokens
    for secret in {PASSWORD, *tokens}:
        assert secret not in caplog.text
