"""The API reference pages as a person on a machine without internet access sees them: a real
browser (Debian's Chromium, driven by Playwright) whose every request to another host is
refused, and which must still list the operations."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from api.db.migrate import upgrade_database
from conftest import Backend, make_settings, running_app, serving

CHROMIUM = os.environ.get("TOLLGATE_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _browser_or_skip() -> None:
    """Outside CI a machine without a browser skips these tests, saying why; in CI (which
    installs Debian's chromium, .ci/run) a missing one fails them."""
    missing = None
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        missing = "Playwright for Python is not installed (pip install -e '.[dev]')"
    if missing is None and not Path(CHROMIUM).is_file():
        missing = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set TOLLGATE_TEST_CHROMIUM)"
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser test cannot run in CI: {missing}")
        pytest.skip(missing)


@dataclass
class Offline:
    """A served Tollgate and a browser page that may reach nothing but it."""

    base_url: str
    page: object
    blocked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@pytest.fixture
async def offline(tmp_path: Path) -> AsyncIterator[Offline]:
    _browser_or_skip()
    from playwright.async_api import async_playwright

    # The pages do not depend on the database: SQLite alone, not once per backend.
    url = f"sqlite+aiosqlite:///{tmp_path / 'tollgate.db'}"
    await asyncio.to_thread(upgrade_database, url)  # it runs an event loop of its own
    settings = make_settings(Backend("sqlite-memory", url, None), "reference:")
    async with running_app(settings) as client, serving(client.app) as port:  # type: ignore[attr-defined]
        base_url = f"http://127.0.0.1:{port}"
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = await browser.new_page()
                offline = Offline(base_url, page)

                async def only_tollgate(route) -> None:
                    if urlsplit(route.request.url).netloc == f"127.0.0.1:{port}" or route.request.url.startswith(("data:", "blob:")):
                        await route.continue_()
                    else:
                        offline.blocked.append(route.request.url)
                        await route.abort("internetdisconnected")

                await page.route("**/*", only_tollgate)
                page.on("response", lambda r: offline.failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
                page.on("requestfailed", lambda r: offline.failed.append(f"failed {r.url}"))
                yield offline
            finally:
                await browser.close()


async def _operation_summaries(base_url: str) -> list[str]:
    async with httpx.AsyncClient() as http:
        schema = (await http.get(f"{base_url}/openapi.json")).json()
    return [op["summary"] for path in schema["paths"].values() for op in path.values() if "summary" in op]


async def test_swagger_ui_lists_the_operations_with_no_other_host_reachable(offline: Offline) -> None:
    page = offline.page
    await page.goto(f"{offline.base_url}/docs")
    await page.wait_for_selector(".opblock", timeout=20_000)
    operations = page.locator(".opblock")
    assert await operations.count() > 30
    assert await page.locator(".opblock-summary-path", has_text="/v1/chat/completions").count() == 1
    assert await page.locator(".opblock-summary-path", has_text="/v1/me/usage").count() == 1
    assert await page.locator(".opblock-summary-path", has_text="/v1/messages").count() == 1  # Anthropic's API
    assert offline.blocked == [], "the page tried to load from another host"
    assert offline.failed == []


async def test_redoc_lists_the_operations_with_no_other_host_reachable(offline: Offline) -> None:
    page = offline.page
    summaries = await _operation_summaries(offline.base_url)
    await page.goto(f"{offline.base_url}/redoc")
    # ReDoc's side menu: one entry per operation, by its summary.
    await page.wait_for_selector("li[data-item-id^='tag/']", timeout=20_000)
    menu = await page.locator("li[data-item-id*='/operation/'] label").all_inner_texts()
    assert len(menu) == len(summaries) > 30
    assert "Chat Completions" in " ".join(menu)
    assert offline.blocked == [], "the page tried to load from another host"
    assert offline.failed == []


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_the_pages_policy_refuses_a_script_from_another_host(offline: Offline, path: str) -> None:
    """Should a future asset point outside, the browser refuses it before any request leaves."""
    page = offline.page
    await page.goto(f"{offline.base_url}{path}")
    violation = await page.evaluate("""() => new Promise(resolve => {
        document.addEventListener('securitypolicyviolation', e => resolve([e.violatedDirective, e.blockedURI]));
        const script = document.createElement('script');
        script.src = 'https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js';
        document.head.appendChild(script);
        setTimeout(() => resolve(null), 5000);
    })""")
    assert violation is not None and violation[0].startswith("script-src"), violation
    assert offline.blocked == []


async def test_root_is_the_console_which_links_to_the_api_reference(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'href="/docs"' in page.text and "/console/console.js" in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert (await client.get("/console/no-such-file.js")).status_code == 404


async def test_an_unknown_asset_is_a_json_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs/no-such-file.js")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}
