"""The OpenAPI document describes every API route and method."""

from __future__ import annotations

import re

from flask import Flask


def test_every_api_route_is_in_the_openapi_document(app: Flask) -> None:
    doc = app.test_client().get("/api/v1/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    paths = doc["paths"]
    seen = 0
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/api/v1/"):
            continue
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule[len("/api/v1"):])
        assert path in paths, f"{rule.rule} missing from openapi.json"
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert method.lower() in paths[path], f"{method} {rule.rule} missing from openapi.json"
            operation = paths[path][method.lower()]
            assert operation["summary"] and operation["responses"]
            declared = {p["name"] for p in operation["parameters"] if p["in"] == "path"}
            assert declared == set(rule.arguments), rule.rule
            seen += 1
    assert seen >= 25
    documented = sum(len(v) for v in paths.values())
    assert documented == seen, "the document lists an endpoint the app does not have"
