"""End to end in real headless Chromium (Playwright driving Debian's /usr/bin/chromium): log in, send a message
and watch it stream, regenerate and choose, edit, thumbs down with a reason; the export then holds exactly those
records. With CHATFORGE_UPDATE_SCREENSHOTS=1 the screenshots go to docs/images/ (otherwise to a temp dir)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHATFORGE_CHROMIUM", "/usr/bin/chromium")
if not Path(CHROMIUM).is_file() and not shutil.which("chromium"):
    pytest.skip("browser test skipped: no Chromium (apt-get install chromium)", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="browser test skipped: pip install playwright")

from chatforge.data.comparisons import load_comparisons  # noqa: E402
from chatforge.data.edits import Edits  # noqa: E402
from chatforge.serve.app import ServeConfig, create_app  # noqa: E402
from chatforge.serve.export import export  # noqa: E402
from chatforge.serve.moderation import Moderator  # noqa: E402
from chatforge.serve.testing import running_server  # noqa: E402
from chatforge.store import Store  # noqa: E402

DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"


def test_chat_in_a_real_browser(tiny, tmp_path):
    model, tokenizer = tiny
    shots = DOCS_IMAGES if os.environ.get("CHATFORGE_UPDATE_SCREENSHOTS") == "1" else tmp_path / "shots"
    shots.mkdir(parents=True, exist_ok=True)
    store = Store(f"sqlite:///{tmp_path / 'ui.db'}")
    store.create_user("ada", "ada-pw", admin=True)
    config = ServeConfig(model_name="tiny-sft-r1", default_max_tokens=48, rate_limit_per_minute=0,
                         moderation=Moderator.from_config({"rules": [{"name": "demo", "phrases": ["zzz-never"]}]}))
    app = create_app(model, tokenizer, store, config)
    executable = CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium")
    with running_server(app) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.set_default_timeout(60_000)
            page.goto(url + "/")
            page.get_by_label("User name").fill("ada")
            page.get_by_label("Password").fill("ada-pw")
            page.screenshot(path=str(shots / "login.png"))
            page.get_by_role("button", name="Log in").click()
            page.wait_for_selector("#app-view:not([hidden])")

            # send a message and watch it stream: count the renders of the growing reply
            page.evaluate("""() => { const orig = window.renderMarkdown; window.__lens = [];
                window.renderMarkdown = (t) => { if (document.querySelector('.streaming')) window.__lens.push(t.length); return orig(t); }; }""")
            page.get_by_label("Message").fill("Write a haiku about `code`.")
            page.get_by_label("Message").press("Enter")
            page.wait_for_selector(".msg.assistant .msg-actions")
            lens = page.evaluate("window.__lens")
            assert len(set(lens)) >= 3 and lens == sorted(lens), lens  # the reply grew in several steps
            page.wait_for_selector("#conversation-list .conv")
            assert page.locator("#conversation-list .conv").first.inner_text().startswith("Write a haiku")
            page.screenshot(path=str(shots / "chat.png"))

            # regenerate -> both answers -> choose B
            page.get_by_role("button", name="Regenerate reply").click()
            page.wait_for_selector(".ab .choose-b:not([disabled])")
            page.screenshot(path=str(shots / "regenerate-ab.png"))
            page.get_by_role("button", name="B is better").click()
            page.wait_for_selector("#status:has-text('choice was recorded')")

            # edit the (chosen) answer
            page.get_by_role("button", name="Edit reply").click()
            page.get_by_label("Corrected answer").fill("Code in backticks,\nquiet loops\u2014the tests pass green.")
            page.get_by_role("button", name="Save edit").click()
            page.wait_for_selector("#status:has-text('Edit saved')")
            assert "tests pass green" in page.locator(".msg.assistant .msg-body").last.inner_text()

            # thumbs down with a reason
            page.get_by_role("button", name="Bad reply").click()
            page.get_by_label("What was wrong? (optional)").fill("not a real haiku")
            page.get_by_role("button", name="Send feedback").click()
            page.wait_for_selector("#status:has-text('Feedback recorded')")
            assert page.get_by_role("button", name="Bad reply").get_attribute("aria-pressed") == "true"

            # markdown is rendered safely: HTML in a reply is shown as text
            assert page.locator(".msg.user .msg-body").first.inner_text().startswith("Write a haiku")
            page.screenshot(path=str(shots / "feedback.png"))

            phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.context.add_cookies(page.context.cookies())
            phone.goto(url + "/")
            phone.wait_for_selector("#app-view:not([hidden])")
            phone.locator("#conversation-list .conv").first.evaluate("b => b.click()")
            phone.wait_for_selector(".msg.assistant")
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, width  # no horizontal scrolling at phone width
            phone.screenshot(path=str(shots / "phone.png"))

            page.goto(url + "/admin")
            page.wait_for_selector("#models td:has-text('tiny-sft-r1')")
            page.screenshot(path=str(shots / "monitoring.png"), full_page=True)
        finally:
            browser.close()

    counts = export(store, tmp_path / "export")
    assert counts == {"sft": 1, "edits": 1, "comparisons": 1, "feedback": 1, "redteam": 0}
    (cmp,) = load_comparisons(tmp_path / "export" / "comparisons.jsonl")
    assert cmp.source == "ab" and cmp.ranks == (2, 1) and cmp.rater.id == "ada"
    assert [x.content for x in cmp.context] == ["Write a haiku about `code`."]
    (edit,) = Edits(tmp_path / "export" / "edits.jsonl").records()
    assert edit.edited_answer.endswith("the tests pass green.") and edit.model_answer == cmp.responses[1].text
    (thumb,) = [json.loads(x) for x in (tmp_path / "export" / "feedback.jsonl").read_text().splitlines()]
    assert (thumb["rating"], thumb["reason"]) == ("down", "not a real haiku")
    assert thumb["response"] == edit.edited_answer and thumb["model"] == "tiny-sft-r1"
