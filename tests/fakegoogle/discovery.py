"""Google's own discovery documents (from google-api-python-client), as a request checker."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Any

from skytwin.fakegoogle import RequestRecord

DOCUMENTS = {"gmail": "gmail.v1.json", "calendar": "calendar.v3.json"}


@dataclass(frozen=True)
class MethodSpec:
    """One API method as the discovery document describes it."""

    id: str
    http_method: str
    path: str  # rooted template, e.g. /gmail/v1/users/{userId}/messages/{id}
    parameters: dict[str, dict[str, Any]]  # the method's own and the API-wide ones

    def path_pattern(self) -> re.Pattern[str]:
        """The template as a regex over a request path."""
        parts = re.split(r"(\{[^}]+\})", self.path)
        regex = "".join("[^/]+" if p.startswith("{") else re.escape(p) for p in parts)
        return re.compile(f"^{regex}$")


def _document(api: str) -> dict[str, Any]:
    root = files("googleapiclient").joinpath("discovery_cache", "documents", DOCUMENTS[api])
    return json.loads(root.read_text())  # type: ignore[no-any-return]


def _walk(resource: dict[str, Any]) -> list[dict[str, Any]]:
    found = list(resource.get("methods", {}).values())
    for child in resource.get("resources", {}).values():
        found.extend(_walk(child))
    return found


@cache
def methods() -> dict[str, MethodSpec]:
    """Every Gmail v1 and Calendar v3 method, by its discovery id."""
    specs: dict[str, MethodSpec] = {}
    for api in DOCUMENTS:
        document = _document(api)
        global_params = document.get("parameters", {})
        for method in _walk(document):
            path = "/" + document["servicePath"] + method["path"]
            specs[method["id"]] = MethodSpec(
                method["id"],
                method["httpMethod"],
                path,
                {**global_params, **method.get("parameters", {})},
            )
    return specs


def problems(record: RequestRecord) -> list[str]:
    """Ways a logged request departs from Google's discovery document (empty when it conforms)."""
    spec = methods().get(record.operation)
    if spec is None:
        return [f"{record.operation}: no such method in the discovery documents"]
    found: list[str] = []
    if record.method != spec.http_method:
        found.append(f"{spec.id}: method {record.method}, discovery says {spec.http_method}")
    if not spec.path_pattern().match(record.path):
        found.append(f"{spec.id}: path {record.path} does not fit {spec.path}")
    for name, values in record.query.items():
        param = spec.parameters.get(name)
        if param is None or param.get("location") == "path":
            found.append(f"{spec.id}: unknown query parameter {name!r}")
            continue
        if len(values) > 1 and not param.get("repeated"):
            found.append(f"{spec.id}: {name!r} repeated but not repeatable")
        for value in values:
            if "enum" in param and value not in param["enum"]:
                found.append(f"{spec.id}: {name}={value!r} not in {param['enum']}")
            if param.get("type") == "boolean" and value not in ("true", "false"):
                found.append(f"{spec.id}: {name}={value!r} is not a boolean")
            if param.get("type") == "integer" and not value.lstrip("-").isdigit():
                found.append(f"{spec.id}: {name}={value!r} is not an integer")
    for name, param in spec.parameters.items():
        if param.get("required") and param.get("location") == "query" and name not in record.query:
            found.append(f"{spec.id}: required parameter {name!r} missing")
    return found
