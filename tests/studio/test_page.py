"""The studio page in chromium: sign in, edit an example, start a training job and watch it move.

The training started here is stopped when this module's app stops (its Rasa process group is killed):
the one real training of the suite is the end-to-end test's.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from tests.studio.conftest import EDITOR_PASSWORD
from tests.support import create_agent

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


async def screenshot(page, name: str) -> None:
    """Refresh the README's screenshots when asked to (YUNTING_SCREENSHOTS=1)."""
    if os.environ.get("YUNTING_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / name), full_page=True)


async def test_an_editor_edits_an_example_and_starts_training_from_the_page(browser_page, studio_stack, editor_name):
    page = browser_page
    await page.goto(studio_stack.url + "/studio/")
    await page.wait_for_selector("#login-form:not([hidden])")
    await page.fill("#username", editor_name)
    await page.fill("#password", EDITOR_PASSWORD)
    await page.click("#login")
    await page.wait_for_selector("body[data-status=ready]")

    await page.click("li.intent[data-intent=thanks]")
    row = page.locator("tr.example").first
    await row.wait_for()
    old_text, file = await row.get_attribute("data-text"), await row.get_attribute("data-file")
    new_text = "谢谢小云，帮大忙了"
    await row.locator("button.edit").click()
    await page.fill("tr.example input.edit-input", new_text)
    await page.click("tr.example button.save")
    await page.wait_for_selector(f'tr.example[data-text="{new_text}"]')
    assert await page.text_content("#flash") == "已保存"
    content = (studio_stack.data_dir / file).read_text()
    assert f"    - {new_text}\n" in content and f"    - {old_text}\n" not in content
    await screenshot(page, "studio-intents.png")

    await page.click("#tabs button[data-tab=versions]")
    await page.click("#start-training")
    await page.wait_for_selector("#job[data-kind=train][data-status=running]", timeout=30_000)
    # The page follows the job live: the stage moves past validation and the bar fills, without a reload.
    await page.wait_for_function(
        "document.querySelector('#job-stage').textContent === 'training' && "
        "Number(document.querySelector('#job-progress').value) >= 0.05",
        timeout=240_000,
    )
    assert "data hash" in await page.text_content("#job-log")
    await screenshot(page, "studio-training.png")


async def test_the_page_tells_a_user_without_the_role_to_go_away(browser_page, studio_stack, database_url):
    page = browser_page
    username = "agent-" + uuid.uuid4().hex[:6]
    await create_agent(database_url, username=username, password=EDITOR_PASSWORD, skills=["general"], role="agent")
    await page.goto(studio_stack.url + "/studio/")
    await page.fill("#username", username)
    await page.fill("#password", EDITOR_PASSWORD)
    await page.click("#login")
    await page.wait_for_selector("#flash[data-kind=error]")
    assert "nlu_editor" in await page.text_content("#flash")
    assert await page.is_hidden("#app")
