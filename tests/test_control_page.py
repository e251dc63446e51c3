"""The owner's control page, in a real headless Chromium against the real control server
(the in-process gateway of test_control.py: real engine child, real SQLite, the fake LLM over
HTTP, a loopback channel). The browser is driven over the DevTools protocol (tests/cdp.py).

The browser tests skip only when chromium is not installed; CI installs it (.ci/run).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest

from cdp import CHROMIUM, Browser, Tab, chromium
from mbe_gateway.texts import TEXTS
from test_control import Plane, anyio_backend, plane  # noqa: F401 (fixtures, shared by name)

EN = TEXTS["en"]


@pytest.fixture(scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Browser]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium; .ci/run installs it)")
    async with chromium(tmp_path_factory.mktemp("chromium-profile")) as launched:
        yield launched


async def sign_in(browser: Browser, plane: Plane, token: str) -> Tab:  # noqa: F811
    """A new tab on the page, `token` typed into its form and sent."""
    tab = await browser.new_tab()
    await tab.goto(f"{plane.http}/")
    await tab.wait_for("!!document.querySelector('#login-form') && document.title !== 'mbe-gateway'")
    await tab.type("#token", token)
    await tab.click("#connect")
    return tab


def text_of(selector: str) -> str:
    return f"((document.querySelector({json.dumps(selector)}) || {{}}).textContent || '')"


def shown(selector: str) -> str:
    node = f"document.querySelector({json.dumps(selector)})"
    return f"!!{node} && {node}.getClientRects().length > 0"


@pytest.mark.anyio
async def test_the_owner_signs_in_watches_the_daemon_live_and_chats_with_the_assistant(
    browser: Browser,
    plane: Plane,  # noqa: F811
) -> None:
    tab = await sign_in(browser, plane, plane.tokens.admin)
    await tab.wait_for(shown("#app"))
    assert await tab.evaluate(text_of("#link")) == EN["page_connected_admin"]
    engine = await tab.wait_for(f"{text_of('#components li[data-component=engine] .state')} === 'ready'")
    assert engine is True
    assert await tab.evaluate(text_of("#components li[data-component=loop] .state")) == "running"
    assert await tab.evaluate(text_of("#model")) == "openai m"
    assert await tab.evaluate(text_of("#queues li[data-queue=inbox]")) == f"{EN['page_queue_inbox']}0"

    # A component that stops shows up without a reload: the "state" event.
    plane.doomed.fail.set()
    await tab.wait_for(f"{text_of('#components li[data-component=doomed] .state')}.startsWith('stopped:')")

    await tab.type("#chat-text", "What should I cook tonight?")
    await tab.click("#chat-send")
    answer = await tab.wait_for(
        "(() => { const b = [...document.querySelectorAll('#chat-log .bubble.assistant')].pop();"
        " return b && b.textContent.includes('Hello from the fake model.') && b.textContent; })()"
    )
    assert "Hello from the fake model." in answer
    assert await tab.evaluate(text_of("#chat-log .bubble.user")) == "What should I cook tonight?"
    # The conversation is remembered, and listed with the others.
    await tab.wait_for(f"{text_of('#sessions')}.includes('control · owner')")

    # The token is in no URL, no history entry, no field, no localStorage; only this tab's
    # sessionStorage, so a reload stays signed in.
    for url in [await tab.evaluate("location.href"), *await tab.history()]:
        assert plane.tokens.admin not in url
        assert "?" not in url
    assert await tab.evaluate("document.querySelector('#token').value") == ""
    assert await tab.evaluate("localStorage.length") == 0
    await tab.goto(f"{plane.http}/")
    await tab.wait_for(shown("#app"))

    await tab.click("#language")
    await tab.wait_for(f"document.title === {json.dumps(TEXTS['zh']['page_title'])}")
    assert await tab.evaluate(text_of("#link")) == TEXTS["zh"]["page_connected_admin"]
    await tab.click("#language")
    assert tab.problems() == []  # no exception, no CSP violation: the texts block and script ran


@pytest.mark.anyio
async def test_a_wrong_token_is_refused_with_a_clear_message(
    browser: Browser,
    plane: Plane,  # noqa: F811
) -> None:
    wrong = plane.tokens.admin[:-3] + "xyz"
    tab = await sign_in(browser, plane, wrong)
    message = await tab.wait_for(f"{shown('#login-error')} && {text_of('#login-error')}")
    assert message == EN["page_wrong_token"]
    assert not await tab.evaluate(shown("#app"))
    assert await tab.evaluate("sessionStorage.length") == 0
    for url in await tab.history():
        assert wrong not in url


@pytest.mark.anyio
async def test_a_stranger_waits_the_reader_sees_it_and_the_owner_approves_them_on_the_page(
    browser: Browser,
    plane: Plane,  # noqa: F811
) -> None:
    before = len(plane.loop.sent)
    await plane.loop.write("hello, may I talk to you?", sender="erin")
    await plane.loop.wait_sent(before + 1)  # erin got a pairing code

    reader = await sign_in(browser, plane, plane.tokens.read)
    await reader.wait_for(f"{text_of('#pending')}.includes('Erin (erin)')")
    assert await reader.evaluate(text_of("#link")) == EN["page_connected_read"]
    assert await reader.evaluate(shown("#read-only"))
    assert not await reader.evaluate(shown("#chat-card"))
    assert await reader.evaluate("document.querySelectorAll('#pending button, #approved button').length") == 0

    owner = await sign_in(browser, plane, plane.tokens.admin)
    await owner.wait_for(f"{text_of('#pending')}.includes('Erin (erin)')")
    await owner.evaluate(
        "[...document.querySelectorAll('#pending li')].find(li => li.textContent.includes('erin'))"
        ".querySelector('button').click()"
    )
    done = EN["page_done_approved"].format(who="Erin", channel="loop")
    assert await owner.wait_for(f"{text_of('#pairing-outcome')} === {json.dumps(done)}")
    notice = (await plane.loop.wait_sent(before + 2))[-1]
    assert notice.chat_id == "erin"
    # The reader's page hears of it (the "pairing" event) and moves erin to the approved list.
    await reader.wait_for(f"{text_of('#approved')}.includes('Erin (erin)')")
    assert "erin" not in await reader.evaluate(text_of("#pending"))
    assert owner.problems() == [] and reader.problems() == []


# --- what any HTTP client sees ------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_page_is_served_with_strict_headers_and_no_data(plane: Plane) -> None:  # noqa: F811
    async with aiohttp.ClientSession() as http, http.get(f"{plane.http}/") as response:
        assert response.status == 200
        page = await response.text()
        headers = response.headers
    policy = {d.split()[0]: d.split()[1:] for d in headers["Content-Security-Policy"].split("; ")}
    assert policy["default-src"] == ["'self'"]
    assert len(policy["script-src"]) == 1 and policy["script-src"][0].startswith("'sha256-")
    assert policy["frame-ancestors"] == ["'none'"] and policy["form-action"] == ["'none'"]
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    host = plane.http.removeprefix("http://")
    assert policy["connect-src"] == ["'self'", f"ws://{host}", f"wss://{host}"]
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["Cache-Control"] == "no-store"
    assert headers["Referrer-Policy"] == "no-referrer"
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert plane.tokens.admin not in page and plane.tokens.read not in page
    assert "Hello from the fake model." not in page  # no conversation, no status: no data


@pytest.mark.anyio
async def test_a_rebinding_host_or_a_token_in_the_url_gets_no_page(plane: Plane) -> None:  # noqa: F811
    _, port = plane.http.rsplit(":", 1)
    async with aiohttp.ClientSession() as http:
        for path in ("/", "/ws"):
            async with http.get(f"{plane.http}{path}", headers={"Host": f"evil.example:{port}"}) as response:
                assert response.status == 403, path
        async with http.get(f"{plane.http}/", headers={"Host": f"localhost:{port}"}) as response:
            assert response.status == 200
        async with http.get(f"{plane.http}/?token={plane.tokens.admin}") as response:
            assert response.status == 400
            assert "never accepted in a URL" in await response.text()
