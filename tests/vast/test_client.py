"""VastClient against httpx.MockTransport: retries, typed errors, shapes, paging, redaction."""

from __future__ import annotations

import json
import logging
import time

import httpx
import pytest

from app.vast.client import host_port, normalize_instance
from app.vast.errors import (
    AuthError,
    CreateAmbiguous,
    InsufficientCredit,
    InvalidResponse,
    OfferUnavailable,
    RateLimited,
    SearchQuotaExceeded,
    VastApiError,
    VastTransportError,
)
from tests.vast.conftest import API_KEY, json_response


def _sequence(*responses):
    items = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        item = items.pop(0) if len(items) > 1 else items[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler


async def test_sends_bearer_auth_and_search_body(make_client):
    client, rec = make_client(lambda r: json_response(200, {"offers": [{"id": 1}]}))
    offers = await client.search_offers({"gpu_ram": {"gte": 24000.0}})
    assert offers == [{"id": 1}]
    req = rec.requests[0]
    assert req.method == "POST" and req.url.path == "/api/v0/bundles/"
    assert req.headers["authorization"] == f"Bearer {API_KEY}"
    assert json.loads(req.content) == {"gpu_ram": {"gte": 24000.0}}


async def test_rate_limit_burst_is_retried_honouring_retry_after(make_client):
    client, rec = make_client(
        _sequence(
            httpx.Response(
                429, text="API requests too frequent endpoint threshold=1.0", headers={"Retry-After": "0.2"}
            ),
            json_response(200, {"offers": []}),
        )
    )
    t0 = time.monotonic()
    assert await client.search_offers({}) == []
    assert len(rec.requests) == 2
    assert time.monotonic() - t0 >= 0.19


async def test_rate_limit_reset_header_is_honoured(make_client):
    reset = str(time.time() + 0.2)
    client, rec = make_client(
        _sequence(
            httpx.Response(429, text="API requests too frequent", headers={"X-RateLimit-Reset": reset}),
            json_response(200, {"instances": None}),
        )
    )
    t0 = time.monotonic()
    assert await client.show_instance(5) is None
    assert time.monotonic() - t0 >= 0.1
    assert len(rec.requests) == 2


async def test_rate_limit_longer_than_deadline_raises_rate_limited(make_client):
    client, rec = make_client(
        lambda r: httpx.Response(429, text="too frequent", headers={"Retry-After": "30"}),
        retry_deadline_s=1.0,
    )
    with pytest.raises(RateLimited) as info:
        await client.show_instance(5)
    assert info.value.retry_after == 30.0
    assert len(rec.requests) == 1


async def test_search_quota_exceeded_is_not_retried(make_client):
    client, rec = make_client(
        lambda r: json_response(
            429,
            {"success": False, "error": "search_quota_exceeded", "msg": "daily quota"},
            {"X-RateLimit-Reset": "1900000000"},
        )
    )
    with pytest.raises(SearchQuotaExceeded) as info:
        await client.search_offers({})
    assert info.value.reset_at == 1900000000.0
    assert len(rec.requests) == 1


async def test_server_errors_are_retried_until_success(make_client):
    client, rec = make_client(
        _sequence(
            httpx.Response(502, text="bad gateway"),
            httpx.Response(503, text="x"),
            json_response(200, {"offers": []}),
        )
    )
    assert await client.search_offers({}) == []
    assert len(rec.requests) == 3


async def test_connect_errors_are_retried_then_raised_at_attempt_limit(make_client):
    client, rec = make_client(_sequence(httpx.ConnectError("refused")), max_attempts=3)
    with pytest.raises(VastTransportError):
        await client.show_instance(1)
    assert len(rec.requests) == 3


async def test_retries_stop_at_the_total_deadline(make_client):
    client, rec = make_client(
        lambda r: httpx.Response(500, text="boom"),
        retry_deadline_s=0.3,
        max_attempts=1000,
        backoff_initial_s=0.05,
        backoff_max_s=0.05,
    )
    t0 = time.monotonic()
    with pytest.raises(VastApiError) as info:
        await client.show_instance(1)
    assert info.value.status == 500
    assert time.monotonic() - t0 < 3.0
    assert 2 <= len(rec.requests) < 20


async def test_client_errors_are_not_retried(make_client):
    client, rec = make_client(
        lambda r: json_response(400, {"success": False, "error": "invalid_args", "msg": "x"})
    )
    with pytest.raises(VastApiError) as info:
        await client.search_offers({})
    assert info.value.status == 400 and info.value.error == "invalid_args"
    assert len(rec.requests) == 1


@pytest.mark.parametrize("status", [401, 403, 404])
async def test_invalid_user_key_is_an_auth_error(make_client, status):
    client, _ = make_client(
        lambda r: json_response(status, {"success": False, "error": "auth_error", "msg": "Invalid user key"})
    )
    with pytest.raises(AuthError):
        await client.list_instances()


async def test_create_offer_gone_404_no_such_ask(make_client):
    client, _ = make_client(
        lambda r: json_response(
            404,
            {
                "success": False,
                "error": "invalid_args",
                "msg": "error 404/3603: no_such_ask Instance type by id 7 is not available.",
                "ask_id": 7,
            },
        )
    )
    with pytest.raises(OfferUnavailable):
        await client.create_instance(7, {"label": "comfyfleet-t-1"})


async def test_create_offer_gone_410_with_cancel_unavail(make_client):
    client, _ = make_client(
        lambda r: json_response(
            410,
            {
                "success": False,
                "error": "no_such_ask",
                "msg": "error 410/3907: no_such_ask Instance type 7 gone",
            },
        )
    )
    with pytest.raises(OfferUnavailable):
        await client.create_instance(7, {"label": "comfyfleet-t-1"})


async def test_create_insufficient_credit(make_client):
    client, _ = make_client(
        lambda r: json_response(
            400, {"success": False, "error": "insufficient_credit", "msg": "not enough credit"}
        )
    )
    with pytest.raises(InsufficientCredit):
        await client.create_instance(7, {"label": "x"})


async def test_create_success_false_in_a_200_is_an_error(make_client):
    client, _ = make_client(
        lambda r: json_response(200, {"success": False, "error": "no_such_ask", "msg": "gone"})
    )
    with pytest.raises(OfferUnavailable):
        await client.create_instance(7, {"label": "x"})


async def test_create_returns_new_contract(make_client):
    client, rec = make_client(lambda r: json_response(200, {"success": True, "new_contract": 4242}))
    assert await client.create_instance(7, {"label": "x", "env": {}}) == 4242
    assert rec.paths() == ["PUT /api/v0/asks/7/"]


async def test_create_5xx_is_ambiguous_and_never_resent(make_client):
    client, rec = make_client(lambda r: httpx.Response(502, text="bad gateway"))
    with pytest.raises(CreateAmbiguous) as info:
        await client.create_instance(7, {"label": "comfyfleet-t-abc"})
    assert info.value.label == "comfyfleet-t-abc"
    assert len(rec.requests) == 1


async def test_create_read_timeout_is_ambiguous_and_never_resent(make_client):
    client, rec = make_client(_sequence(httpx.ReadTimeout("slow")))
    with pytest.raises(CreateAmbiguous):
        await client.create_instance(7, {"label": "l"})
    assert len(rec.requests) == 1


async def test_create_dropped_connection_is_ambiguous(make_client):
    client, rec = make_client(_sequence(httpx.RemoteProtocolError("server disconnected")))
    with pytest.raises(CreateAmbiguous):
        await client.create_instance(7, {"label": "l"})
    assert len(rec.requests) == 1


async def test_create_without_new_contract_is_ambiguous(make_client):
    client, _ = make_client(lambda r: json_response(200, {"success": True}))
    with pytest.raises(CreateAmbiguous):
        await client.create_instance(7, {"label": "l"})


async def test_create_refused_connection_and_429_are_safely_resent(make_client):
    client, rec = make_client(
        _sequence(
            httpx.ConnectError("refused"),
            httpx.Response(429, text="too frequent"),
            json_response(200, {"success": True, "new_contract": 9}),
        )
    )
    assert await client.create_instance(7, {"label": "l"}) == 9
    assert len(rec.requests) == 3


async def test_list_pages_with_after_token_and_select_filters(make_client):
    pages = {
        None: {"instances": [{"id": 1, "label": "a"}], "next_token": "T1"},
        "T1": {"instances": [{"id": 2, "label": "b"}], "next_token": "T2"},
        "T2": {"instances": [{"id": 3, "label": "c"}], "next_token": None},
    }
    client, rec = make_client(lambda r: json_response(200, pages[r.url.params.get("after_token")]))
    rows = await client.list_instances({"label": {"eq": "a"}})
    assert [r["id"] for r in rows] == [1, 2, 3]
    assert [r.url.path for r in rec.requests] == ["/api/v1/instances/"] * 3
    assert json.loads(rec.requests[0].url.params["select_filters"]) == {"label": {"eq": "a"}}
    assert rec.requests[1].url.params["after_token"] == "T1"
    assert "next_token" not in rec.requests[1].url.params


async def test_list_that_is_not_a_list_is_an_error_not_empty(make_client):
    client, _ = make_client(lambda r: json_response(200, {"success": True, "instances_found": 0}))
    with pytest.raises(InvalidResponse):
        await client.list_instances()


async def test_list_deprecated_410_is_an_error_not_empty(make_client):
    client, _ = make_client(
        lambda r: json_response(
            410,
            {"success": False, "error": "deprecated_endpoint", "msg": "/api/v0/instances/ is deprecated."},
        )
    )
    with pytest.raises(VastApiError) as info:
        await client.list_instances()
    assert info.value.status == 410


async def test_list_repeating_token_is_an_error(make_client):
    client, _ = make_client(lambda r: json_response(200, {"instances": [], "next_token": "SAME"}))
    with pytest.raises(InvalidResponse):
        await client.list_instances()


async def test_find_by_label_filters_exactly(make_client):
    client, _ = make_client(
        lambda r: json_response(
            200,
            {
                "instances": [{"id": 1, "label": "comfyfleet-d-1 "}, {"id": 2, "label": "comfyfleet-d-10"}],
                "next_token": None,
            },
        )
    )
    rows = await client.find_by_label("comfyfleet-d-1")
    assert [r["id"] for r in rows] == [1]  # whitespace stripped, near-miss label ignored


async def test_show_null_instance_is_none(make_client):
    client, rec = make_client(lambda r: json_response(200, {"instances": None}))
    assert await client.show_instance(77) is None
    assert rec.requests[0].url.path == "/api/v0/instances/77/"


async def test_show_without_instances_key_is_an_error(make_client):
    client, _ = make_client(lambda r: json_response(200, {"success": True}))
    with pytest.raises(InvalidResponse):
        await client.show_instance(77)


@pytest.mark.parametrize("ports", [None, {}, [8080, 22], "garbage", {"22/tcp": None}, {"22/tcp": []}])
async def test_show_tolerates_ports_missing_null_empty_or_list(make_client, ports):
    body = {"id": 5, "actual_status": "running", "public_ipaddr": " 1.2.3.4\n"}
    if ports != "garbage":
        body["ports"] = ports
    client, _ = make_client(lambda r: json_response(200, {"instances": body}))
    inst = await client.show_instance(5)
    assert inst["ports"] == {}
    assert inst["public_ipaddr"] == "1.2.3.4"
    assert host_port(inst, "22/tcp") is None


def test_normalize_instance_keeps_docker_ports_and_strips_strings():
    inst = normalize_instance(
        {
            "ports": {"22/tcp": [{"HostIp": "0.0.0.0", "HostPort": " 40122 "}]},
            "ssh_host": "ssh2.vast.ai \n",
            "label": " x ",
        }
    )
    assert host_port(inst, "22/tcp") == 40122
    assert inst["ssh_host"] == "ssh2.vast.ai" and inst["label"] == "x"


async def test_destroy_404_not_found_is_already_gone(make_client):
    client, _ = make_client(
        lambda r: json_response(404, {"success": False, "error": "not_found", "msg": "Instance not found"})
    )
    assert await client.destroy_instance(5) is False


async def test_destroy_bare_404_from_a_wrong_endpoint_is_not_taken_as_gone(make_client):
    # A 404 without Vast's error code (a proxy, a wrong VAST_API_URL) says nothing about the instance:
    # reading it as "already gone" would mark a billing instance destroyed in the ledger.
    client, _ = make_client(lambda r: httpx.Response(404, text="<html>404 Not Found</html>"))
    with pytest.raises(VastApiError):
        await client.destroy_instance(5)


async def test_destroy_bare_404_confirmed_gone_by_show(make_client):
    def handler(r: httpx.Request) -> httpx.Response:
        if r.method == "DELETE":
            return httpx.Response(404, text="Not Found")
        return json_response(200, {"instances": None})

    client, rec = make_client(handler)
    assert await client.destroy_instance(5) is False
    assert rec.paths()[-1].startswith("GET /api/v0/instances/5/")


async def test_destroy_success(make_client):
    client, rec = make_client(lambda r: json_response(200, {"success": True}))
    assert await client.destroy_instance(5) is True
    assert rec.paths() == ["DELETE /api/v0/instances/5/"]


async def test_destroy_with_a_bad_key_is_an_auth_error_not_gone(make_client):
    client, _ = make_client(
        lambda r: json_response(404, {"success": False, "error": "auth_error", "msg": "Invalid user key"})
    )
    with pytest.raises(AuthError):
        await client.destroy_instance(5)


async def test_request_logs_polls_result_url_without_our_key(make_client):
    state = {"polls": 0}

    def handler(r: httpx.Request) -> httpx.Response:
        if r.url.path == "/api/v0/instances/request_logs/5/":
            return json_response(200, {"success": True, "result_url": "http://s3.test/logs/abc.log"})
        state["polls"] += 1
        assert "authorization" not in r.headers
        if state["polls"] < 3:
            return httpx.Response(404, text="NoSuchKey")
        return httpx.Response(200, text="line1\nline2\n")

    client, rec = make_client(handler)
    assert await client.request_logs(5, poll_interval_s=0.01, deadline_s=2) == "line1\nline2\n"
    assert json.loads(rec.requests[0].content) == {"tail": "1000"}


async def test_request_logs_gives_up_at_the_deadline(make_client):
    def handler(r):
        if "request_logs" in r.url.path:
            return json_response(200, {"result_url": "http://s3.test/never.log"})
        return httpx.Response(404)

    client, _ = make_client(handler)
    with pytest.raises(Exception, match="not available"):
        await client.request_logs(5, poll_interval_s=0.01, deadline_s=0.1)


async def test_balance_reads_credit_then_balance(make_client):
    client, _ = make_client(
        lambda r: json_response(200, {"credit": 12.5, "balance": 0.0, "api_key": API_KEY})
    )
    assert await client.balance() == 12.5
    client2, _ = make_client(lambda r: json_response(200, {"balance": 3.0}))
    assert await client2.balance() == 3.0
    user = await client.current_user()
    assert "api_key" not in user


async def test_ssh_key_calls(make_client):
    def handler(r):
        if r.url.path == "/api/v0/ssh/" and r.method == "GET":
            return json_response(200, [{"id": 1, "key": "ssh-ed25519 AAAA x"}])
        return json_response(200, {"success": True, "key": {"id": 2, "public_key": "ssh-ed25519 BBBB"}})

    client, rec = make_client(handler)
    assert (await client.list_ssh_keys())[0]["key"] == "ssh-ed25519 AAAA x"
    await client.add_ssh_key("ssh-ed25519 BBBB")
    await client.attach_ssh_key(9, "ssh-ed25519 BBBB")
    assert rec.paths()[1:] == ["POST /api/v0/ssh/", "POST /api/v0/instances/9/ssh/"]
    assert json.loads(rec.requests[2].content) == {"ssh_key": "ssh-ed25519 BBBB"}


async def test_api_key_never_in_errors_repr_or_logs(make_client, caplog):
    from app.redact import RedactingFilter

    echo = f"Invalid user key {API_KEY}"
    client, _ = make_client(
        lambda r: json_response(401, {"success": False, "error": "auth_error", "msg": echo})
    )
    handler_filter = RedactingFilter()
    caplog.handler.addFilter(handler_filter)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(AuthError) as info:
        await client.show_instance(1)
    logging.getLogger("app.vast").warning("failed: %s", info.value.msg + " " + API_KEY)
    assert API_KEY not in str(info.value)
    assert API_KEY not in repr(info.value)
    assert API_KEY not in repr(client)
    assert API_KEY not in caplog.text


async def test_create_unreadable_200_is_ambiguous(make_client):
    client, rec = make_client(lambda r: httpx.Response(200, text="<html>proxy page</html>"))
    with pytest.raises(CreateAmbiguous):
        await client.create_instance(7, {"label": "l"})
    assert len(rec.requests) == 1
