"""Issue #7: one studio example must never break training. Every reproduction from the issue, over real HTTP
against a studio with Rasa's own reader checking each write; and one training at a time under a burst."""

from __future__ import annotations

import asyncio
import hashlib
import unicodedata

import pytest

from api.errors import Unprocessable
from api.studio.text_rules import clean_text
from tests.studio.conftest import StudioClient, StudioStack
from tests.support import MiniappCustomer

# The reproductions: each was accepted (201) and then broke the file.
BAD = {
    "U+2028": "\u2028",
    "U+0084": "\u0084",
    "U+0085": "\u0085",
    "U+007F": "\u007f",
    "U+FFFF": "\uffff",
    "newline": "\n",
    "U+2029": "\u2029",
    "U+FDD0": "\ufdd0",
    "U+202E": "\u202e",
    "U+FEFF": "\ufeff",
}


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("name", list(BAD))
def test_the_gate_refuses_each_character_with_a_reason(name):
    with pytest.raises(Unprocessable) as refused:
        clean_text(f"查询余额{BAD[name]}- 我要注销账户")
    assert refused.value.status_code == 422 and ("U+" in refused.value.message or "line" in refused.value.message)


def test_the_gate_normalises_to_nfc_and_keeps_ordinary_text():
    assert clean_text("  Cafe\u0301 卡 ") == "Café 卡"
    assert unicodedata.is_normalized("NFC", clean_text("ｶﾞ"))
    assert clean_text("转账限额是多少？[工行](bank) 😀") == "转账限额是多少？[工行](bank) 😀"
    for bad in ("", "   ", "- 另一个例句", "x" * 501):
        with pytest.raises(Unprocessable):
            clean_text(bad)


@pytest.mark.parametrize("name", ["U+2028", "U+0084", "U+0085", "U+007F", "U+FFFF", "newline"])
async def test_each_reproduction_is_refused_and_the_file_stays_as_it_was(studio_stack, editor, name):
    detail = (await editor.http.get("/intents/thanks")).json()
    file = detail["examples"][-1]["file"]
    before = digest(studio_stack.data_dir / file)
    text = f"谢谢{BAD[name]}你们"
    added = await editor.http.post("/intents/thanks/examples", json={"text": text, "file": file})
    assert added.status_code == 422, added.text
    assert added.json()["error"]["message"]
    assert digest(studio_stack.data_dir / file) == before
    # editing an existing example into one is refused the same way
    edited = await editor.http.put(
        "/intents/thanks/examples",
        json={
            "file": file,
            "base_version": detail["versions"][file],
            "text": detail["examples"][-1]["text"],
            "new_text": text,
        },
    )
    assert edited.status_code == 422 and digest(studio_stack.data_dir / file) == before
    # synonyms, regexes and lookups go through the same gate
    resource = await editor.http.put(
        "/resources/synonym/信用卡", json={"examples": [f"信用{BAD[name]}咭"], "file": file, "base_version": None}
    )
    assert resource.status_code == 422 and digest(studio_stack.data_dir / file) == before
    # and the file still takes a good edit, and a delete
    fine = await editor.http.post("/intents/thanks/examples", json={"text": f"谢谢你们{name}", "file": file})
    assert fine.status_code == 201, fine.text
    gone = await editor.http.request(
        "DELETE",
        "/intents/thanks/examples",
        params={"file": file, "base_version": fine.json()["versions"][file], "text": f"谢谢你们{name}"},
    )
    assert gone.status_code == 200, gone.text


async def test_text_is_stored_nfc(studio_stack, editor):
    added = await editor.http.post("/intents/thanks/examples", json={"text": "谢谢 Cafe\u0301"})
    assert added.status_code == 201, added.text
    texts = [e["text"] for e in (await editor.http.get("/intents/thanks")).json()["examples"]]
    assert "谢谢 Café" in texts and "谢谢 Cafe\u0301" not in texts


async def test_what_rasa_cannot_read_is_refused_by_rasas_reader(studio_stack, editor):
    """Passes the character gate, but Rasa's own reader refuses it: 422 naming Rasa's reason, file unchanged."""
    file = (await editor.http.get("/intents/thanks")).json()["examples"][-1]["file"]
    before = digest(studio_stack.data_dir / file)
    added = await editor.http.post(
        "/intents/thanks/examples", json={"text": '谢谢[小王]{"entity": "person", }', "file": file}
    )
    assert added.status_code == 422, added.text
    assert added.json()["error"]["code"] == "rasa_refused" and "Incorrect training data format" in added.text
    assert digest(studio_stack.data_dir / file) == before


async def test_an_inbox_message_cannot_plant_examples(studio_stack, editor, emulator):
    """The customer's 「转账限额是多少\\n- 我要注销账户」 re-labelled into the inbox: accepting it is refused."""
    customer = await MiniappCustomer.login(studio_stack.url, emulator)
    said = await customer.say("转账限额是多少\n- 我要注销账户")
    item = await editor.http.post(
        "/inbox/relabels", json={"message_id": said["message"]["id"], "intent": "transfer_help"}
    )
    assert item.status_code == 201, item.text
    files = {p: digest(p) for p in (studio_stack.data_dir / "nlu").rglob("*.yml")}
    accepted = await editor.http.post(f"/inbox/{item.json()['id']}/accept", json={"intent": "transfer_help"})
    assert accepted.status_code == 422, accepted.text
    assert "U+000A" in accepted.json()["error"]["message"]
    assert {p: digest(p) for p in (studio_stack.data_dir / "nlu").rglob("*.yml")} == files
    examples = {e["text"] for e in (await editor.http.get("/intents/transfer_help")).json()["examples"]}
    assert "我要注销账户" not in examples
    still_open = {i["id"] for g in (await editor.http.get("/inbox")).json()["groups"] for i in g["items"]}
    assert item.json()["id"] in still_open  # not lost: the team can dismiss it or type a clean example
    await customer.aclose()


async def test_a_file_that_became_unreadable_still_lets_the_team_repair_it(studio_stack, editor):
    """A file damaged outside the studio (U+007F written by hand): its examples still show (marked), so the
    bad one can be deleted; appends to its intent still go to it, not silently to another file."""
    path = studio_stack.data_dir / "nlu" / "damaged.yml"
    path.write_text('version: "3.1"\nnlu:\n- intent: damaged_demo\n  examples: |\n    - 好的\u007f谢谢\n    - 明白了\n')
    listing = (await editor.http.get("/intents")).json()
    demo = next(i for i in listing["intents"] if i["name"] == "damaged_demo")
    assert demo["files"] == ["nlu/damaged.yml"] and demo["examples"] == 2
    detail = (await editor.http.get("/intents/damaged_demo")).json()
    bad = next(e["text"] for e in detail["examples"] if e["text"].startswith("好的"))
    assert "\ufffd" in bad
    deleted = await editor.http.request(
        "DELETE",
        "/intents/damaged_demo/examples",
        params={"file": "nlu/damaged.yml", "base_version": detail["versions"]["nlu/damaged.yml"], "text": bad},
    )
    assert deleted.status_code == 200, deleted.text
    assert "\u007f" not in path.read_text() and "- 明白了" in path.read_text()
    added = await editor.http.post("/intents/damaged_demo/examples", json={"text": "收到，谢谢"})
    assert added.status_code == 201 and "nlu/damaged.yml" in added.json()["versions"]
    assert not any(f.startswith("nlu/") and f != "nlu/damaged.yml" for f in added.json()["versions"])


async def test_three_train_requests_at_once_start_one_training(tmp_path, settings_for, rasa_url, editor_name):
    """One 202; the others 409 naming the running job. (A stack whose data can't pass validation, so the one
    job fails in seconds instead of training.)"""
    stack = StudioStack(settings_for, tmp_path, rasa_url, studio_min_examples=100_000)
    client = await StudioClient.login(stack.url, editor_name)
    try:
        answers = await asyncio.gather(*(client.http.post("/jobs/train") for _ in range(3)))
        codes = sorted(a.status_code for a in answers)
        assert codes == [202, 409, 409], [a.text for a in answers]
        job_id = next(a.json()["id"] for a in answers if a.status_code == 202)
        for refused in (a for a in answers if a.status_code == 409):
            assert refused.json()["error"]["code"] == "training_in_progress"
            assert refused.json()["error"]["job_id"] == job_id
    finally:
        await client.aclose()
        stack.stop()


async def test_file_names_that_cant_be_written_are_refused_and_nothing_changes(studio_stack, editor):
    """domain.yml is not a training data file, a path through a file or a name the file system can't hold are
    not either: 400 `bad_file` (each was a 500 from the fuzz), NUL a 422 from the text guard; nothing written."""
    files = {p: digest(p) for p in studio_stack.data_dir.rglob("*.yml")}
    versions = (await editor.http.get("/intents")).json()["versions"]
    through_a_file = "nlu/chitchat.yml/more.yml"
    for file, status in (
        ("domain.yml", 400),
        (through_a_file, 400),
        ("nlu/" + "长" * 40 + ".yml", 400),  # 120 bytes in UTF-8
        ("nlu/a\x00.yml", 422),
    ):
        answers = [
            await editor.http.post("/intents/thanks/examples", json={"text": "多谢多谢", "file": file}),
            await editor.http.put("/resources/synonym/credit", json={"examples": ["信用卡"], "file": file}),
            await editor.http.delete(
                "/resources/regex/card_last4", params={"file": file, "base_version": versions["nlu/entities.yml"]}
            ),
        ]
        for answer in answers:
            assert answer.status_code == status, (file, answer.text)
            assert answer.json()["error"]["code"] == ("bad_file" if status == 400 else "bad_character")
    assert {p: digest(p) for p in studio_stack.data_dir.rglob("*.yml")} == files
    assert not (studio_stack.data_dir / through_a_file).exists()
