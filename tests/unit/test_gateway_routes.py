"""The local gateway's routes as SAM reads Api events, its proxy-response rules, and `devstack api` wiring, offline."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devstack.__main__ import parser
from devstack.gateway import IMPLICIT_API, LocalGateway, _proxy_response, routes_of
from devstack.stack import LocalStack


def function(events: dict[str, Any]) -> dict[str, Any]:
    return {"Type": "AWS::Serverless::Function", "Properties": {"Handler": "app.h", "Events": events}}


def api_event(path: str, method: str = "get", **props: Any) -> dict[str, Any]:
    return {"Type": "Api", "Properties": {"Path": path, "Method": method, **props}}


def api(**props: Any) -> dict[str, Any]:
    return {"Type": "AWS::Serverless::Api", "Properties": props}


def test_auth_comes_from_the_event_else_the_apis_default_else_none():
    template = {
        "Resources": {
            "Api": api(StageName="v1", Auth={"DefaultAuthorizer": "AWS_IAM"}),
            "Fn": function(
                {
                    "List": api_event("/forms/{formId}/attachments", RestApiId={"Ref": "Api"}),
                    "Hook": api_event("/webhooks/itwin", "post", RestApiId="Api", Auth={"Authorizer": "NONE"}),
                    "Queue": {"Type": "SQS", "Properties": {"Queue": "q"}},
                }
            ),
        }
    }
    name, stage, routes = routes_of(template)
    assert (name, stage) == ("Api", "v1")
    assert [(r.resource, r.method, r.auth, r.implicit_auth) for r in routes] == [
        ("/forms/{formId}/attachments", "GET", "AWS_IAM", False),
        ("/webhooks/itwin", "POST", "NONE", False),
    ]
    del template["Resources"]["Api"]["Properties"]["Auth"]
    assert [(r.auth, r.implicit_auth) for r in routes_of(template)[2]] == [("NONE", True), ("NONE", False)]


def test_without_an_api_resource_events_go_to_samls_implicit_api_on_prod():
    template = {"Resources": {"Fn": function({"Any": api_event("/{proxy+}", "any")})}}
    name, stage, routes = routes_of(template)
    assert (name, stage, routes[0].method) == (IMPLICIT_API, "Prod", "ANY")


def test_the_stage_may_be_a_parameter_and_globals_give_the_auth():
    template = {
        "Parameters": {"Stage": {"Type": "String", "Default": "dev"}},
        "Globals": {"Api": {"Auth": {"DefaultAuthorizer": "AWS_IAM"}}},
        "Resources": {"Api": api(StageName={"Ref": "Stage"}), "Fn": function({"E": api_event("/x")})},
    }
    _, stage, routes = routes_of(template)
    assert stage == "dev"
    assert routes[0].auth == "AWS_IAM"


def test_several_apis_need_a_choice_and_events_name_theirs():
    template = {
        "Resources": {
            "A": api(StageName="a"),
            "B": api(StageName="b"),
            "Fn": function({"One": api_event("/a", RestApiId="A"), "Two": api_event("/b", RestApiId={"Ref": "B"})}),
        }
    }
    with pytest.raises(ValueError, match="several APIs"):
        routes_of(template)
    assert [r.resource for r in routes_of(template, "B")[2]] == ["/b"]
    with pytest.raises(ValueError, match="not an AWS::Serverless::Api"):
        routes_of(template, "C")


@pytest.mark.parametrize(
    ("api_auth", "event_auth"),
    [({}, {"Authorizer": "MyCognito"}), ({"DefaultAuthorizer": "MyLambdaAuthorizer"}, {})],
    ids=["event", "default"],
)
def test_authorizers_the_gateway_cannot_check_are_refused_not_left_open(api_auth, event_auth):
    template = {"Resources": {"Api": api(Auth=api_auth), "Fn": function({"E": api_event("/x", Auth=event_auth)})}}
    with pytest.raises(ValueError, match="is not supported by the local gateway"):
        routes_of(template)


def test_two_events_on_one_route_are_refused():
    template = {"Resources": {"Api": api(), "Fn": function({"A": api_event("/f/{a}"), "B": api_event("/f/{b}")})}}
    with pytest.raises(ValueError, match="same route"):
        routes_of(template)


def test_literal_segments_win_over_parameters_over_proxies_and_a_method_over_any():
    template = {
        "Resources": {
            "Api": api(StageName="v1"),
            "Fn": function(
                {
                    "Literal": api_event("/forms/special/attachments"),
                    "Param": api_event("/forms/{formId}/attachments"),
                    "Proxy": api_event("/forms/{proxy+}", "any"),
                    "ProxyGet": api_event("/forms/{proxy+}", "get"),
                }
            ),
        }
    }
    gateway = LocalGateway(template, invoke=lambda f, e: None)

    def chosen(method: str, path: str) -> tuple[str, dict[str, str]] | None:
        found = gateway._route(method, path)
        return (found[0].event, found[1]) if found else None

    assert chosen("GET", "/forms/special/attachments") == ("Literal", {})
    assert chosen("GET", "/forms/F%201/attachments") == ("Param", {"formId": "F 1"})
    assert chosen("GET", "/forms/F/other/deep") == ("ProxyGet", {"proxy": "F/other/deep"})
    assert chosen("DELETE", "/forms/F/attachments") == ("Proxy", {"proxy": "F/attachments"})
    assert chosen("GET", "/forms") is None
    assert chosen("GET", "/other") is None


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"statusCode": 204}, (204, [("Content-Type", "application/json")], b"")),
        ({"statusCode": "200", "body": "ü"}, (200, [("Content-Type", "application/json")], "ü".encode())),
        (
            {"statusCode": 200, "headers": {"content-type": "text/plain", "Content-Length": "99", "X-N": 5}},
            (200, [("content-type", "text/plain"), ("X-N", "5")], b""),
        ),
    ],
)
def test_proxy_responses_as_api_gateway_reads_them(result, expected):
    assert _proxy_response(result) == expected


@pytest.mark.parametrize(
    ("result", "why"),
    [
        ({"statusCode": True}, "not an HTTP status"),
        ({"statusCode": 99}, "not an HTTP status"),
        ({"statusCode": 200, "headers": {"X": None}}, "has a NoneType value"),
        ({"statusCode": 200, "headers": {"Bad Name": "x"}}, "is not a header name"),
        ({"statusCode": 200, "multiValueHeaders": {"X": "not a list"}}, "is not a list"),
        ({"statusCode": 200, "isBase64Encoded": "yes"}, "isBase64Encoded must be"),
        ({"body": "no status"}, "statusCode None"),
    ],
)
def test_malformed_proxy_responses_are_refused(result, why):
    with pytest.raises(ValueError, match=why):
        _proxy_response(result)


def test_old_state_files_without_an_api_url_still_read(tmp_path):
    old = {"moto_url": "http://m", "sandbox_url": "http://s", "resources": {}, "functions": {}, "handlers": {}}
    state = tmp_path / "stack.json"
    state.write_text(json.dumps({**old, "pids": {"moto": 1}}))
    stack = LocalStack.read(state)
    assert stack.api_url == ""
    stack.api_url = "http://127.0.0.1:3000/v1"
    stack.save(state)
    assert LocalStack.read(state).api_url == "http://127.0.0.1:3000/v1"
    state.write_text(json.dumps({**old, "a_later_field": 1}))
    assert LocalStack.read(state).moto_url == "http://m"


def test_the_cli_has_an_api_command_like_sam_local_start_api():
    cli = parser()
    assert cli.parse_args(["api"]).port == 3000
    assert cli.parse_args(["api", "--port", "3100"]).port == 3100
    assert "like `sam local start-api`" in cli.format_help()
    assert "SigV4 checked" in cli.format_help()
