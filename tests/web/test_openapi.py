"""The OpenAPI description and the app agree: routes, authentication and request bodies.

The request-body checks put each field through candidate values chosen to sit
on the edges (types, blanks, lengths, patterns, enums, nulls, unknown fields)
and require, value by value, that the description's verdict (JSON Schema
2020-12 with format checks) is the validator's verdict, and that a rejection
names exactly the fields the description says are wrong.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonschema_rs
import pytest

from skytwin.web import WebState, create_app
from skytwin.web.openapi import OPENAPI_PATH, openapi_spec

from .conftest import Api

MISSING = object()  # a candidate meaning "leave the field out"
IGNORED_METHODS = {"HEAD", "OPTIONS"}
NOT_DESCRIBED = {"/", "/static/{filename}"}  # the dashboard's page and files


def app_routes() -> dict[tuple[str, str], Any]:
    """(METHOD, OpenAPI path) -> view function, for every route of the app."""
    app = create_app(WebState.__new__(WebState))  # routes only: no state is touched
    routes = {}
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        if path in NOT_DESCRIBED:
            continue
        for method in sorted(set(rule.methods or ()) - IGNORED_METHODS):
            routes[(method, path)] = app.view_functions[rule.endpoint]
    return routes


def spec_operations(spec: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in spec["paths"].items()
        for method, operation in item.items()
    }


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def body_schema(spec: dict[str, Any], method: str, path: str) -> dict[str, Any]:
    operation = spec["paths"][path][method]
    return resolve(spec, operation["requestBody"]["content"]["application/json"]["schema"])


def accepts(schema: dict[str, Any], value: Any) -> bool:
    """The description's verdict on one value."""
    validator = jsonschema_rs.validator_for(
        {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema},
        validate_formats=True,
    )
    return bool(validator.is_valid(value))


# ---- routes and authentication ----


def test_every_route_is_described_and_every_description_is_a_route() -> None:
    described = set(spec_operations(openapi_spec()))
    served = set(app_routes())
    assert served - described == set(), "routes missing from the OpenAPI description"
    assert described - served == set(), "described operations the app does not serve"


def test_the_described_authentication_is_what_the_handlers_require() -> None:
    spec = openapi_spec()
    default = spec["security"]
    for key, view in app_routes().items():
        security = spec_operations(spec)[key].get("security", default)
        requires_token = {} not in security and security != []
        marked = bool(getattr(view, "skytwin_authenticated", False))
        if key == ("POST", "/api/approvals/expire-sweep"):
            # An admin token, or no token at all from loopback (checked in the handler).
            assert security == [{"bearer": []}, {}] and not marked
            continue
        assert requires_token == marked, f"{key}: described auth {security} vs handler"
        if requires_token:
            assert "401" in spec_operations(spec)[key]["responses"], key


def test_every_path_parameter_is_described() -> None:
    spec = openapi_spec()
    for (method, path), operation in spec_operations(spec).items():
        names = set(re.findall(r"{([a-z_]+)}", path))
        described = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
        assert names == described, (method, path)


def test_the_document_is_valid_json_schema_throughout() -> None:
    spec = openapi_spec()
    meta = jsonschema_rs.validator_for({"$ref": "https://json-schema.org/draft/2020-12/schema"})
    assert spec["openapi"].startswith("3.1")
    for name, schema in spec["components"]["schemas"].items():
        assert meta.is_valid(schema), name
    # Every reference resolves.
    text = repr(spec)
    for name in set(re.findall(r"#/components/schemas/([A-Za-z]+)", text)):
        assert name in spec["components"]["schemas"], name
    ids = [op["operationId"] for op in spec_operations(spec).values()]
    assert len(ids) == len(set(ids))


async def test_the_document_is_served(api: Api) -> None:
    async with api.client() as client:
        response = await client.get(OPENAPI_PATH)
    assert response.status_code == 200
    assert response.json() == openapi_spec()


# ---- request bodies: the description's verdict is the validator's ----

INGEST_VALID = {
    "source": "gmail",
    "id": "m-1",
    "type": "newsletter",
    "occurred_at": "2026-01-31T09:00:00Z",
    "data": {"messageId": "m-1", "subject": "Weekly digest"},
}
INGEST_CANDIDATES: dict[str, list[Any]] = {
    "source": [
        MISSING, None, "", "   ", "gmail", "my-app.v2", "a", "a" * 64, "a" * 65, "Gmail",
        "1gmail", "gm ail", 5, ["gmail"],
    ],
    "id": [MISSING, None, "", "   ", "m-1", "ünïcode ✓", "x" * 512, "x" * 513, 12, {}],
    "type": [
        MISSING, None, "", "newsletter", "meeting_invite", "news-letter", "News", "t" * 64,
        "t" * 65, True,
    ],
    "occurred_at": [
        MISSING, None, "2026-01-31T09:00:00Z", "2026-01-31T09:00:00+02:00",
        "2026-01-31T09:00:00.123Z", "1970-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
        "1969-12-31T23:59:59Z", "2026-01-31", "2026-01-31T09:00:00", "yesterday", "",
        1_700_000_000,
    ],
    "data": [MISSING, {}, {"a": [1, "b", None]}, None, [], "x", 5],
}
RESPOND_CANDIDATES: dict[str, list[Any]] = {
    "action": [MISSING, None, "approve", "reject", "APPROVE", "approved", "", 1],
    "reason": [MISSING, None, "keep it", "r" * 1000, "r" * 1001, "", "   ", 5, ["no"]],
}
UNKNOWN_FIELDS = {"user_id": 7, "userId": "someone-else", "status": "approved"}


def cases(valid: dict[str, Any], candidates: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """One body per candidate value of each field, the other fields valid; then mixtures."""
    bodies = []
    for name, values in candidates.items():
        for value in values:
            body = copy.deepcopy(valid)
            if value is MISSING:
                body.pop(name, None)
            else:
                body[name] = value
            bodies.append(body)
    for unknown, value in UNKNOWN_FIELDS.items():
        bodies.append({**valid, unknown: value})
    # Several bad fields at once are all named.
    first = {name: values[-1] for name, values in candidates.items()}
    bodies.append({**first, "extra": 1})
    return bodies


def expected_bad_fields(schema: dict[str, Any], body: dict[str, Any]) -> set[str]:
    """The fields the description says are wrong in ``body``."""
    bad = {name for name in schema["required"] if name not in body}
    for name, value in body.items():
        if name not in schema["properties"]:
            if schema.get("additionalProperties") is False:
                bad.add(name)
        elif not accepts(schema["properties"][name], value):
            bad.add(name)
    return bad


async def check_agreement(
    api: Api, token: str, path: str, schema: dict[str, Any], bodies: list[dict[str, Any]],
    ok_statuses: set[int],
) -> int:
    checked = 0
    async with api.client(token) as client:
        for body in bodies:
            expected = expected_bad_fields(schema, body)
            assert (not expected) == accepts(schema, body)  # per-field and whole-body agree
            response = await client.post(path, json=body)
            if expected:
                assert response.status_code == 400, (body, response.text)
                assert set(response.json()["fields"]) == expected, (body, response.json())
            else:
                assert response.status_code in ok_statuses, (body, response.text)
            checked += 1
    return checked


async def test_ingest_validation_agrees_with_the_description(api: Api) -> None:
    _, token = await api.new_user("ann@example.com")
    schema = body_schema(openapi_spec(), "post", "/api/events/ingest")
    assert schema["required"] == ["source", "id", "type"]
    assert schema["additionalProperties"] is False
    bodies = cases(INGEST_VALID, INGEST_CANDIDATES)
    # An accepted body is a new signal (201) or, for a (source, id) seen before, a retry (200).
    checked = await check_agreement(
        api, token, "/api/events/ingest", schema, bodies, ok_statuses={200, 201}
    )
    assert checked == len(bodies) > 50


async def test_respond_validation_agrees_with_the_description(api: Api) -> None:
    _, token = await api.new_user("ann@example.com")
    spec = openapi_spec()
    schema = body_schema(spec, "post", "/api/approvals/{approval_id}/respond")
    assert schema["required"] == ["action"]
    assert schema["properties"]["action"]["enum"] == ["approve", "reject"]
    bodies = cases({"action": "reject", "reason": "not now"}, RESPOND_CANDIDATES)
    # No such request: a valid body gets as far as the lookup (404), an invalid one stops at 400.
    checked = await check_agreement(
        api, token, "/api/approvals/987654/respond", schema, bodies, ok_statuses={404}
    )
    assert checked == len(bodies)


@pytest.mark.parametrize("path", ["/api/signals", "/api/approvals/pending",
                                  "/api/approvals/history"])
async def test_page_parameters_agree_with_the_description(api: Api, path: str) -> None:
    _, token = await api.new_user("ann@example.com")
    spec = openapi_spec()
    params = {p["name"]: p["schema"] for p in spec["paths"][path]["get"]["parameters"]}
    assert set(params) == {"limit", "cursor"}
    candidates = {
        "limit": ["1", "50", str(params["limit"]["maximum"]),
                  str(params["limit"]["maximum"] + 1), "0", "-1", "abc", "1.5", ""],
        "cursor": ["", "1", "007", "123456789012345678", "1234567890123456789", "0", "-3",
                   "abc", "1.5"],
    }
    async with api.client(token) as client:
        for name, values in candidates.items():
            for raw in values:
                if params[name]["type"] == "integer":
                    valid = bool(re.fullmatch(r"-?[0-9]+", raw)) and accepts(params[name], int(raw))
                else:
                    valid = accepts(params[name], raw)
                response = await client.get(path, params={name: raw})
                expected = 200 if valid else 400
                assert response.status_code == expected, (name, raw, response.text)
                if not valid:
                    assert set(response.json()["fields"]) == {name}
