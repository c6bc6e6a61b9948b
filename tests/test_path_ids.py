"""Ids in paths and query strings are strict decimal integers: an id written any other way
("3\\n", " 3", "+3", "03", "3.0") is a 422 and acts on nothing, on every route that takes one."""

from __future__ import annotations

import re

import pytest

from conftest import ADMIN

NON_CANONICAL = ["%0A", "%20", "%09", ".0", "e0"]


async def test_a_router_id_with_a_trailing_newline_deletes_nothing(client) -> None:
    router = (await client.post("/v1/admin/routers", json={"name": "chat", "type": "text-generation"}, headers=ADMIN)).json()["id"]
    for written in (f"{router}%0A", f"%20{router}", f"+{router}", f"0{router}", f"{router}.0"):
        response = await client.delete(f"/v1/admin/routers/{written}", headers=ADMIN)
        assert response.status_code == 422, (written, response.text)
        assert response.json()["detail"][0]["loc"] == ["path", "router_id"]
    assert (await client.get(f"/v1/admin/routers/{router}", headers=ADMIN)).status_code == 200


@pytest.mark.parametrize("suffix", NON_CANONICAL)
async def test_every_id_path_parameter_is_strict(client, suffix: str) -> None:
    """Each operation of the OpenAPI schema with an integer path parameter, that parameter
    written as "1" plus a suffix: 422 naming the parameter, never a 2xx or a 404."""
    spec = client.app.openapi()
    checked = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            integers = [p["name"] for p in operation.get("parameters", [])
                        if p["in"] == "path" and p["schema"].get("type") == "integer"]
            for name in integers:
                url = re.sub(r"\{(\w+)\}", lambda m: "1" + (suffix if m.group(1) == name else ""), path)
                response = await client.request(method.upper(), url, headers=ADMIN, json={})
                assert response.status_code == 422, (method, url, response.status_code, response.text)
                assert ["path", name] in [d["loc"] for d in response.json()["detail"]], (method, url, response.text)
                checked += 1
    assert checked >= 25


async def test_id_query_filters_are_strict(client) -> None:
    for url in ("/v1/admin/tokens?user=1%0A", "/v1/admin/users?role=%2B1", "/v1/admin/providers?router=1.0",
                "/v1/documents?collection_id=01", "/v1/admin/usage?group_by=router&id=1%0A"):
        response = await client.get(url, headers=ADMIN)
        assert response.status_code == 422, (url, response.text)
