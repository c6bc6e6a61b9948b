"""The console in a real browser (Debian's Chromium driven by Playwright), against a served
Tollgate and the fake provider, with every request to another host refused: login, a
streamed answer and its Stop button, untrusted answers shown as text, keys used with the
`openai` SDK, the administration and who may see it, the usage chart.

`TOLLGATE_CONSOLE_SCREENSHOTS=<folder>` saves a screenshot of each page there (docs/console/).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from api.db.migrate import upgrade_database
from pdfs import make_pdf
from conftest import ADMIN, Backend, Seeder, SeededUser, bearer, fake_upstream, make_settings, running_app, serving
from fakes.upstream import Behaviour
from test_api_reference import CHROMIUM, _browser_or_skip

SCREENSHOTS = os.environ.get("TOLLGATE_CONSOLE_SCREENSHOTS")


@dataclass
class Console:
    base_url: str
    api: httpx.AsyncClient  # the app in-process, for setting up and checking
    page: Any
    upstream: Any
    router: int
    user: SeededUser
    admin: SeededUser
    elsewhere: list[str] = field(default_factory=list)  # requests to any other host (refused)
    dialogs: list[str] = field(default_factory=list)

    async def log_in(self, user: SeededUser | None = None, password: str | None = None) -> None:
        user = user or self.user
        page = self.page
        await page.goto(f"{self.base_url}/")
        await page.fill("#email", user.email)
        await page.fill("#password", password or user.password)
        await page.keyboard.press("Enter")
        if password is None:
            await page.wait_for_selector("h1:has-text('Playground')")

    async def ask(self, text: str) -> None:
        await self.page.fill("#prompt", text)
        await self.page.keyboard.press("Enter")

    async def shot(self, name: str) -> None:
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            await self.page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


@pytest.fixture
def behaviour() -> Behaviour:
    return Behaviour()


@pytest.fixture
async def console(tmp_path: Path, behaviour: Behaviour) -> AsyncIterator[Console]:
    _browser_or_skip()
    from playwright.async_api import async_playwright

    # The console is a client of the API: the backends are covered by the API's own tests.
    url = f"sqlite+aiosqlite:///{tmp_path / 'tollgate.db'}"
    await asyncio.to_thread(upgrade_database, url)
    settings = make_settings(Backend("sqlite-memory", url, None), "console:", qdrant_path=str(tmp_path / "qdrant"),
                             rag={"vector_store_model": "embeddings", "ingestion_concurrency": 1})
    async for upstream in fake_upstream(behaviour):
        async with running_app(settings) as api, serving(api.app) as port:  # type: ignore[attr-defined]
            router = (await api.post("/v1/admin/routers", headers=ADMIN, json={
                "name": "chat", "type": "text-generation", "cost_prompt_tokens": 1, "cost_completion_tokens": 2})).json()["id"]
            await api.post("/v1/admin/providers", headers=ADMIN, json={
                "router": router, "type": "vllm", "url": upstream.base_url, "model_name": "fake-chat",
                "model_total_params": 8, "model_active_params": 8, "model_hosting_zone": "FRA"})
            embeddings = (await api.post("/v1/admin/routers", headers=ADMIN, json={
                "name": "embeddings", "type": "text-embeddings-inference"})).json()["id"]
            await api.post("/v1/admin/providers", headers=ADMIN, json={
                "router": embeddings, "type": "openai", "url": upstream.base_url, "model_name": "fake-embed"})
            others = []
            for name, kind in (("ranker", "text-classification"), ("listen", "automatic-speech-recognition")):
                other = (await api.post("/v1/admin/routers", headers=ADMIN, json={"name": name, "type": kind})).json()["id"]
                await api.post("/v1/admin/providers", headers=ADMIN, json={
                    "router": other, "type": "vllm", "url": upstream.base_url, "model_name": "fake-chat"})
                others.append(other)
            seeder = Seeder(api)
            user = await seeder.user(limits=[{"router": r, "type": "rpm", "value": None} for r in (router, embeddings, *others)])
            admin = await seeder.user(permissions=["admin"], limits=[{"router": router, "type": "rpm", "value": None}])
            base_url = f"http://127.0.0.1:{port}"
            async with async_playwright() as playwright:
                browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                try:
                    page = await browser.new_page(viewport={"width": 1280, "height": 860})
                    console = Console(base_url, api, page, upstream, router, user, admin)

                    async def only_tollgate(route: Any) -> None:
                        if urlsplit(route.request.url).netloc == f"127.0.0.1:{port}":
                            await route.continue_()
                        else:
                            console.elsewhere.append(route.request.url)
                            await route.abort("internetdisconnected")

                    await page.route("**/*", only_tollgate)

                    async def on_dialog(dialog: Any) -> None:
                        console.dialogs.append(dialog.message)
                        await dialog.dismiss()

                    page.on("dialog", on_dialog)
                    yield console
                finally:
                    await browser.close()


async def test_a_wrong_password_is_refused_then_the_right_one_opens_the_playground(console: Console) -> None:
    page = console.page
    await console.log_in(password="not the password")
    await page.wait_for_selector("text=Wrong email or password.")
    assert await page.locator("#nav").is_hidden()
    await console.shot("login")
    await console.log_in()
    assert await page.locator("#who").inner_text() == console.user.email
    assert await page.locator("#nav-admin").is_hidden()  # not an administrator
    # The key is in this tab's storage, never in the address.
    stored = await page.evaluate("sessionStorage.getItem('tollgate.session')")
    assert stored and "tg-" not in page.url
    started = time.perf_counter()
    await page.goto(f"{console.base_url}/#/playground")
    paint = await page.evaluate("""() => new Promise(resolve => new PerformanceObserver((list) => {
        const entry = list.getEntriesByName('first-contentful-paint')[0]; if (entry) resolve(entry.startTime);
    }).observe({type: 'paint', buffered: true}))""")
    print(f"\nconsole: first contentful paint of the playground {paint:.0f} ms ({time.perf_counter() - started:.2f} s to load)")
    assert console.elsewhere == []


@pytest.mark.parametrize("behaviour", [Behaviour(reply_words=30, chunk_delay_seconds=0.05)])
async def test_a_streamed_answer_appears_in_parts_before_it_completes(console: Console) -> None:
    page = console.page
    await console.log_in()
    await console.ask("Count for me")
    answer = page.locator(".message.assistant .answer").last
    await page.wait_for_selector(".message.assistant .answer:has-text('word2')")
    partial = await answer.inner_text()
    assert "word29" not in partial  # shown while the rest is still being generated
    assert await page.locator("#stop").is_visible()
    await page.wait_for_selector("#stop", state="hidden", timeout=10_000)
    assert (await answer.inner_text()).endswith("word29")
    meta = await page.locator(".message.assistant .meta").last.inner_text()
    assert "+ 30 tokens" in meta and "cost" in meta and "gCO2eq" in meta, meta
    await console.shot("playground")


@pytest.mark.parametrize("behaviour", [Behaviour(endless=True, chunk_delay_seconds=0.02)])
async def test_stop_ends_the_answer_mid_stream(console: Console) -> None:
    page = console.page
    await console.log_in()
    await console.ask("Never stop")
    await page.wait_for_selector(".message.assistant .answer:has-text('word5')")
    await page.click("#stop")
    await page.wait_for_selector(".message.assistant .meta:has-text('Stopped.')")
    stopped_at = await page.locator(".message.assistant .answer").last.inner_text()
    await asyncio.sleep(0.3)
    assert await page.locator(".message.assistant .answer").last.inner_text() == stopped_at  # nothing more arrives
    assert await page.locator("#send").is_enabled()


HOSTILE = "Look: <img src=x onerror=alert(1)> and <script>alert(2)</script> **bold** [site](javascript:alert(3))"


@pytest.mark.parametrize("behaviour", [Behaviour(reply_text=HOSTILE)])
async def test_an_answer_with_markup_is_shown_as_text_and_runs_nothing(console: Console) -> None:
    page = console.page
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    await console.log_in()
    await console.ask("Say something nasty")
    await page.wait_for_selector("#stop", state="hidden")
    answer = page.locator(".message.assistant .answer").last
    text = await answer.inner_text()
    assert "<img src=x onerror=alert(1)>" in text and "<script>alert(2)</script>" in text
    assert await answer.locator("img, script").count() == 0
    assert await answer.locator("strong").inner_text() == "bold"  # Markdown still rendered
    assert await answer.locator("a").count() == 0  # a javascript: link is not a link
    await asyncio.sleep(0.3)
    assert console.dialogs == []
    assert not [url for url in requests if urlsplit(url).path.endswith("/x")]
    assert console.elsewhere == []


async def test_a_key_created_in_the_console_works_with_the_openai_sdk(console: Console) -> None:
    from openai import AsyncOpenAI

    page = console.page
    await console.log_in()
    await page.click("nav >> text=Keys")
    await page.fill("#key-name", "my notebook")
    await page.click("form[aria-label='Create a key'] button[type=submit]")
    secret = (await page.locator("#new-key").inner_text()).strip()
    await console.shot("keys")
    client = AsyncOpenAI(base_url=f"{console.base_url}/v1", api_key=secret)
    answer = await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hello"}])
    assert answer.choices[0].message.content
    await page.reload()
    await page.wait_for_selector("td:has-text('my notebook')")
    assert secret not in await page.content()  # shown once: the list has only a masked hint


async def test_a_user_without_admin_sees_no_administration_and_the_api_refuses_it(console: Console) -> None:
    page = console.page
    await console.log_in()
    assert await page.locator("#nav-admin").is_hidden()
    await page.goto(f"{console.base_url}/#/admin")
    await page.wait_for_selector("h1:has-text('403')")
    key = await page.evaluate("JSON.parse(sessionStorage.getItem('tollgate.session')).key")
    refused = await console.api.get("/v1/admin/users", headers=bearer(key))
    assert refused.status_code == 403


async def test_an_admin_creates_a_user_gives_the_role_a_model_and_that_user_chats(console: Console) -> None:
    page = console.page
    empty_role = (await console.api.post("/v1/admin/roles", headers=ADMIN, json={"name": "newcomers"})).json()["id"]
    await console.log_in(console.admin)
    await page.click("#nav-admin")
    await page.fill("#new-email", "grace@example.com")
    await page.fill("#new-password", "a long enough password")
    await page.select_option("#new-role", str(empty_role))
    await page.fill("#new-budget", "1")
    await page.click("form[aria-label='Create a user'] button[type=submit]")
    await page.wait_for_selector("td:has-text('grace@example.com')")
    await page.click("[aria-label='Budget of grace@example.com']")
    await page.fill("#topup-amount", "2.5")
    await page.fill("#topup-reason", "welcome")
    await page.click("form[aria-label='Top up'] button[type=submit]")
    await page.wait_for_selector("#ledger-entries td:has-text('welcome')")
    await page.wait_for_selector("#users tr:has-text('grace@example.com'):has-text('3.5')")
    await console.shot("administration")
    await page.click("[role=tab][data-section=roles]")
    await page.select_option("#grant-role", str(empty_role))
    await page.select_option("#grant-router", str(console.router))
    await page.click("button:has-text('Give')")
    await page.wait_for_selector("#roles tr:has-text('newcomers'):has-text('chat')")
    await page.click("[role=tab][data-section=models]")
    await page.wait_for_selector("[data-router] h2:has-text('chat (text-generation)')")
    await page.click("#logout")
    await page.wait_for_selector("text=You are logged out.")
    grace = SeededUser(0, "grace@example.com", "a long enough password", empty_role, "", 0)
    await console.log_in(grace)
    await console.ask("Hello")
    await page.wait_for_selector(".message.assistant .meta:has-text('tokens')")
    # Back as the administrator: grace's call is in the usage report by user.
    await console.api.app.state.context.usage_writer.flush()  # type: ignore[attr-defined]
    await page.click("#logout")
    await console.log_in(console.admin)
    await page.click("#nav-admin")
    await page.click("[role=tab][data-section=reports]")
    await page.select_option("#report-group", "user")
    await page.wait_for_selector("#report tbody tr")
    assert int(await page.locator("#report-chart rect").first.get_attribute("data-value")) >= 1
    await console.shot("reports")


async def test_the_usage_chart_shows_the_calls_just_made(console: Console) -> None:
    page = console.page
    await console.log_in()
    for question in ("one", "two"):
        await console.ask(question)
        await page.wait_for_selector(f".message.assistant >> nth={['one', 'two'].index(question)}")
        await page.wait_for_selector("#stop", state="hidden")
    await page.click("nav >> text=Usage")
    bar = page.locator("#usage-chart rect")
    await bar.first.wait_for()
    assert [await b.get_attribute("data-value") for b in await bar.all()] == ["2"]  # calls, today
    assert await page.locator("#calls tbody tr").count() == 2
    assert "chat" in await page.locator("#by-model").inner_text()
    await console.shot("usage")


async def test_a_revoked_key_sends_the_person_back_to_login_with_a_reason(console: Console) -> None:
    page = console.page
    await console.log_in()
    key_id = await page.evaluate("JSON.parse(sessionStorage.getItem('tollgate.session')).keyId")
    assert (await console.api.post(f"/v1/admin/tokens/{key_id}/revoke", headers=ADMIN, json={})).status_code == 204
    await page.click("nav >> text=Keys")
    await page.wait_for_selector("text=Your session has ended")
    assert await page.locator("#email").is_visible()


async def test_a_pdf_becomes_ready_hybrid_search_finds_its_second_page_and_chat_cites_it(console: Console, tmp_path: Path) -> None:
    page = console.page
    pdf = tmp_path / "handbook.pdf"
    pdf.write_bytes(make_pdf(["Roles, budgets and keys are described in the first chapter of this handbook.",
                              "The lighthouse keeper counts seventeen gulls every morning before breakfast."]))
    await console.log_in()
    await page.click("nav >> text=Documents")
    await page.fill("#collection-name", "handbook")
    await page.click("form[aria-label='Create a collection'] button[type=submit]")
    await page.wait_for_selector("text=No documents in this collection yet.")
    await page.set_input_files("#file", str(pdf))
    await page.click("form[aria-label='Upload a document'] button[type=submit]")
    await page.wait_for_selector("td[data-status='ready']", timeout=20_000)
    await page.click("button:has-text('Chunks')")
    await page.wait_for_selector("#chunks .chunk:has-text('page 2')")
    await page.fill("#query", "lighthouse keeper gulls")
    await page.click("form[aria-label='Search tester'] button[type=submit]")
    first_hybrid = page.locator("[data-method='hybrid'] li.result").first
    await first_hybrid.wait_for()
    assert "seventeen gulls" in await first_hybrid.inner_text() and "page 2" in await first_hybrid.inner_text()
    assert await page.locator("[data-method='semantic'] li.result").count() >= 1
    assert await page.locator("[data-method='lexical'] li.result").count() >= 1
    await console.shot("documents")
    await page.click("nav >> text=Playground")
    await page.select_option("#search-in", label="handbook")
    await console.ask("How many gulls does the keeper count?")
    await page.wait_for_selector(".message.assistant .sources:has-text('Sources')")
    await page.click(".message.assistant .sources summary")
    assert "seventeen gulls" in await page.locator(".message.assistant .sources").inner_text()
    assert console.elsewhere == []


async def test_embeddings_rerank_and_transcription_are_tried_from_the_playground(console: Console, tmp_path: Path) -> None:
    page = console.page
    await console.log_in()
    await page.fill("#embed-input", "a sentence to embed")
    await page.click("section[aria-label='Other models'] form button[type=submit]")
    await page.wait_for_selector("#embed-result:has-text('dimensions')")
    await page.click("[role=tab][data-kind=rerank]")
    await page.fill("#rerank-query", "red apples")
    await page.fill("#rerank-documents", "bananas are yellow\nred apples are sweet\nthe sky")
    await page.click("section[aria-label='Other models'] form button[type=submit]")
    first = page.locator("#rerank-result li").first
    await first.wait_for()
    assert "red apples are sweet" in await first.inner_text()
    await page.click("[role=tab][data-kind=transcription]")
    audio = tmp_path / "hello.wav"
    audio.write_bytes(b"RIFF" + b"\x00" * 16_000)
    await page.set_input_files("#audio-file", str(audio))
    await page.click("section[aria-label='Other models'] form button[type=submit]")
    await page.wait_for_selector("#audio-result p")
    assert "error" not in (await page.locator("#audio-result p").first.get_attribute("class") or "")
    await console.shot("other-models")


async def test_the_playground_fits_a_phone(console: Console) -> None:
    page = console.page
    await page.set_viewport_size({"width": 390, "height": 844})
    await console.log_in()
    await console.ask("Hello from a phone")
    await page.wait_for_selector(".message.assistant .meta:has-text('tokens')")
    assert await page.evaluate("document.scrollingElement.scrollWidth <= window.innerWidth")
    await console.shot("playground-phone")


async def test_an_admin_creates_a_role_sets_its_limit_and_adds_a_model_with_a_provider(console: Console) -> None:
    page = console.page
    await console.log_in(console.admin)
    await page.click("#nav-admin")
    await page.click("[role=tab][data-section=roles]")
    await page.fill("#role-name", "analysts")
    await page.check("input[name=permission][value=read_metric]")
    await page.click("form[aria-label='Create a role'] button[type=submit]")
    await page.wait_for_selector("#roles tr:has-text('analysts'):has-text('read_metric')")
    await page.select_option("#limit-role", label="analysts")
    await page.select_option("#limit-router", label="chat")
    await page.select_option("#limit-type", "tpm")
    await page.fill("#limit-value", "5000")
    await page.click("form[aria-label='Set a limit'] button[type=submit]")
    await page.wait_for_selector("#roles tr:has-text('analysts'):has-text('chat (tpm 5000)')")
    roles = (await console.api.get("/v1/admin/roles?limit=100", headers=ADMIN)).json()["data"]
    analysts = next(r for r in roles if r["name"] == "analysts")
    assert analysts["permissions"] == ["read_metric"]
    assert {"router": console.router, "type": "tpm", "value": 5000} in analysts["limits"]
    await page.click("[role=tab][data-section=models]")
    await page.fill("#router-name", "second-chat")
    await page.click("form[aria-label='Add a model'] button[type=submit]")
    await page.wait_for_selector("[data-router] h2:has-text('second-chat')")
    await page.select_option("#provider-router", label="second-chat")
    await page.fill("#provider-url", console.upstream.base_url)
    await page.fill("#provider-model", "fake-chat")
    await page.fill("#provider-key", "sk-provider-secret-123")
    await page.click("form[aria-label='Add a provider'] button[type=submit]")
    section = page.locator("[data-router]:has(h2:has-text('second-chat'))")
    await section.locator("td:has-text('fake-chat')").wait_for()
    assert "sk-provider-secret-123" not in await page.content()  # a provider's key is never shown back
