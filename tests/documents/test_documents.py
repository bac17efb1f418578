"""Documents: uploads checked by content and size (413/422 with a message), sealed at rest with their SHA-256,
shown to the holding agent only, every view audited; request cards; official-account images via media/get."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import uuid

import httpx
from sqlalchemy import create_engine, text

from api.paths import ROOT
from api.settings import DEV_OA_TOKEN
from api.vault import Keyring, new_master_key_entry, open_sealed, sealed_key_id
from tests.advisors.support import agent, eventually, held_ids
from tests.conftest import TEST_VAULT_MASTER_KEYS
from tests.support import MiniappCustomer, new_person

JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + os.urandom(5000)
PDF = b"%PDF-1.4\n" + os.urandom(3000) + b"\n%%EOF"
LIMIT = 100_000


async def _held_conversation(stack, emulator, person=None):
    _, console = await agent(stack, name="holder")
    customer = await MiniappCustomer.login(stack.app_url, emulator, person)
    conversation_id = (await customer.say("转人工"))["conversation"]["id"]
    await eventually(lambda: _has(console, conversation_id))
    return console, customer, conversation_id


async def _has(console, conversation_id):
    return conversation_id in await held_ids(console)


async def upload(customer, data: bytes, *, name="photo.jpg", content_type="image/jpeg", msg_id=None, request_id=None):
    form = {"client_msg_id": msg_id or uuid.uuid4().hex}
    if request_id is not None:
        form["request_id"] = str(request_id)
    return await customer.http.post("/miniapp/documents", data=form, files={"file": (name, data, content_type)})


async def test_a_photo_reaches_the_holding_agent_sealed_and_every_view_is_audited(isolated_stack, emulator, tmp_path):
    documents_dir = tmp_path / "documents"
    stack = isolated_stack(document_max_bytes=LIMIT, documents_dir=documents_dir)
    console, customer, conversation_id = await _held_conversation(stack, emulator)
    sent = await upload(customer, JPEG)
    assert sent.status_code == 200, sent.text
    document = sent.json()["document"]
    assert document["kind"] == "image" and document["sha256"] == hashlib.sha256(JPEG).hexdigest()
    retry = await upload(customer, JPEG, msg_id=None)
    assert retry.status_code == 200
    listed = (await console.http.get(f"/agents/conversations/{conversation_id}/documents")).json()
    assert [d["id"] for d in listed] == [document["id"], retry.json()["document"]["id"]]
    viewed = await console.http.get(f"/agents/documents/{document['id']}")
    assert viewed.status_code == 200 and viewed.content == JPEG
    assert viewed.headers["x-content-sha256"] == document["sha256"] and viewed.headers["cache-control"] == "no-store"
    # At rest the file is sealed: not the photo's bytes.
    stored = [p for p in documents_dir.rglob("*") if p.is_file()]
    assert stored and all(JPEG[16:200] not in p.read_bytes() for p in stored)
    assert not [p for p in documents_dir.rglob("*.tmp")]
    # The transcript carries the document's message for the agent.
    messages = (await console.http.get(f"/agents/conversations/{conversation_id}")).json()["messages"]
    assert any((m.get("payload") or {}).get("document_id") == document["id"] for m in messages)
    # Another agent may not open it; a duplicate (same client_msg_id) is stored once.
    _, other = await agent(stack, name="other", online=False)
    assert (await other.http.get(f"/agents/documents/{document['id']}")).status_code == 403
    msg_id = uuid.uuid4().hex
    first, again = await upload(customer, PDF, msg_id=msg_id), await upload(customer, PDF, msg_id=msg_id)
    assert again.json()["duplicate"] is True and again.json()["document"]["id"] == first.json()["document"]["id"]
    engine = create_engine(stack.database_url.replace("+aiosqlite", ""))
    with engine.connect() as conn:
        views = conn.execute(text("SELECT actor_id, subject FROM audit_event WHERE action = 'document_view'")).all()
        pdfs = conn.execute(text("SELECT count(*) FROM document WHERE kind = 'pdf'")).scalar()
    engine.dispose()
    assert len(views) == 1 and views[0][1] == f"document:{document['id']}"
    assert pdfs == 1
    for client in (console, customer, other):
        await client.aclose()


async def test_bad_and_oversized_files_are_refused_with_a_message(isolated_stack, emulator):
    stack = isolated_stack(document_max_bytes=LIMIT)
    console, customer, _ = await _held_conversation(stack, emulator)
    exe = await upload(customer, b"MZ\x90\x00" + os.urandom(500), name="photo.jpg", content_type="image/jpeg")
    assert exe.status_code == 422 and exe.json()["error"]["code"] == "unsupported_file"
    assert "PDF" in exe.json()["error"]["message"]
    empty = await upload(customer, b"")
    assert empty.status_code == 422
    just_over = await upload(customer, JPEG[:16] + os.urandom(LIMIT))
    assert just_over.status_code == 413 and just_over.json()["error"]["code"] == "file_too_large"
    assert "MB" in just_over.json()["error"]["message"]
    far_over = await upload(customer, JPEG[:16] + os.urandom(LIMIT * 3))
    assert far_over.status_code == 413 and far_over.json()["error"]["code"] == "payload_too_large"
    missing = await customer.http.post("/miniapp/documents", data={"client_msg_id": uuid.uuid4().hex})
    assert missing.status_code == 422
    # Nothing was stored for the refused ones.
    assert (await console.http.get(f"/agents/conversations/{_}/documents")).json() == []
    await console.aclose()
    await customer.aclose()


async def test_a_request_card_is_answered_with_an_upload(isolated_stack, emulator):
    stack = isolated_stack(document_max_bytes=LIMIT)
    console, customer, conversation_id = await _held_conversation(stack, emulator)
    asked = await console.http.post(
        f"/agents/conversations/{conversation_id}/document-requests", json={"what": "身份证正反面照片"}
    )
    assert asked.status_code == 200, asked.text
    request_id = asked.json()["id"]
    history = (await customer.history())["messages"]
    card = next(m for m in history if (m.get("payload") or {}).get("type") == "document_request")
    assert card["payload"]["request_id"] == request_id and "身份证" in card["text"]
    assert (await customer.http.get(f"/miniapp/document-requests/{request_id}")).json()["what"] == "身份证正反面照片"
    answered = await upload(customer, JPEG, request_id=request_id)
    assert answered.status_code == 200 and answered.json()["document"]["request_id"] == request_id
    requests = (await console.http.get(f"/agents/conversations/{conversation_id}/document-requests")).json()
    assert requests[0]["state"] == "fulfilled"
    twice = await upload(customer, JPEG, request_id=request_id)
    assert twice.status_code == 409
    await console.aclose()
    await customer.aclose()


async def test_an_official_account_image_is_fetched_through_the_platform_api(isolated_stack, emulator):
    stack = isolated_stack(document_max_bytes=LIMIT)
    person = new_person()
    console, customer, conversation_id = await _held_conversation(stack, emulator, person)
    pushed = httpx.post(
        emulator.base_url + "/_sim/oa/image",
        json={
            "person": person,
            "content_b64": base64.b64encode(JPEG).decode(),
            "url": stack.app_url + "/wechat/oa",
            "token": DEV_OA_TOKEN,
            "mode": "plain",
        },
        timeout=30,
    )
    assert pushed.status_code == 200, pushed.text

    async def documents():
        return (await console.http.get(f"/agents/conversations/{conversation_id}/documents")).json()

    found = await eventually(documents)
    assert found[0]["channel"] == "wechat_oa" and found[0]["sha256"] == hashlib.sha256(JPEG).hexdigest()
    viewed = await console.http.get(f"/agents/documents/{found[0]['id']}")
    assert viewed.content == JPEG
    await console.aclose()
    await customer.aclose()


def test_the_emulator_serves_media_by_id_and_refuses_unknown_ones(emulator):
    token = httpx.get(
        emulator.base_url + "/cgi-bin/token",
        params={"grant_type": "client_credential", "appid": "wxoa0000000000dev", "secret": "dev-secret-change-me"},
    ).json()["access_token"]
    unknown = httpx.get(emulator.base_url + "/cgi-bin/media/get", params={"access_token": token, "media_id": "nope"})
    assert unknown.json()["errcode"] == 40007


async def test_key_rotation_rewraps_documents_with_the_recordings(isolated_stack, emulator, tmp_path):
    """After a new master key goes first, the operators' `rewrap` moves every document's data key to it; the
    row follows, and the content still opens (with the new key alone) to the same SHA-256."""
    documents_dir = tmp_path / "documents"
    stack = isolated_stack(document_max_bytes=LIMIT, documents_dir=documents_dir)
    console, customer, _ = await _held_conversation(stack, emulator)
    sent = await upload(customer, JPEG)
    assert sent.status_code == 200, sent.text
    document_id = sent.json()["document"]["id"]
    rotated = new_master_key_entry("test-2") + "," + TEST_VAULT_MASTER_KEYS
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "YUNTING_ENV": "test",
        "YUNTING_DATABASE_URL": stack.database_url,
        "YUNTING_RECORDINGS_DIR": str(tmp_path / "recordings"),
        "YUNTING_DOCUMENTS_DIR": str(documents_dir),
        "YUNTING_VAULT_MASTER_KEYS": rotated,
    }
    done = subprocess.run(
        [sys.executable, "-m", "api.video.sealing", "rewrap"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "1 documents done, 0 failed" in done.stdout, (done.stdout, done.stderr)
    engine = create_engine(stack.database_url.replace("+aiosqlite", ""))
    with engine.connect() as conn:
        key_id, stored, path, sha = conn.execute(
            text("SELECT vault_key_id, stored_sha256, storage_path, sha256 FROM document WHERE id = :i"),
            {"i": document_id},
        ).one()
    engine.dispose()
    sealed = documents_dir / path
    assert key_id == "test-2" and sealed_key_id(sealed) == "test-2"
    assert stored == hashlib.sha256(sealed.read_bytes()).hexdigest()
    only_new = Keyring.parse(rotated.split(",")[0])
    assert b"".join(open_sealed(sealed, only_new, sha256_plain=sha, sha256_stored=stored)) == JPEG
    again = subprocess.run(
        [sys.executable, "-m", "api.video.sealing", "rewrap"], env=env, capture_output=True, text=True, timeout=120
    )
    assert again.returncode == 0 and "0 documents done" in again.stdout  # nothing left on the old key
    for client in (console, customer):
        await client.aclose()
