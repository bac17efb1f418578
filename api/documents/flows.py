"""Documents with side effects: a customer's upload (mini-program) or image (official account) becomes a
sealed file, a row with its SHA-256 and a message the holding agent sees; an agent's request card; every
view of a document is audited before a byte leaves. Content and file names are never logged."""

from __future__ import annotations

import logging

from redis.asyncio import Redis
from sqlmodel.ext.asyncio.session import AsyncSession

from api.agents.models import Agent
from api.audit.models import audit
from api.channels.wechat_platform import WeChatApiError, WeChatPlatform
from api.conversations import repository as conversations
from api.conversations import service as conversation_service
from api.conversations.delivery import Delivery
from api.conversations.flows import Triage, do_receive_customer_message
from api.conversations.models import Conversation, ConversationState, Direction, Message, SenderKind
from api.conversations.turn_writes import Received
from api.db import saved_id
from api.documents import repository
from api.documents.models import Document, DocumentRequest
from api.documents.sniff import ACCEPTED, sniff
from api.documents.storage import DocumentStore
from api.errors import Conflict, NotPermitted, PayloadTooLarge, ResourceNotFound, YuntingError
from api.realtime import agent_channel, publish
from api.timeutil import utcnow

log = logging.getLogger(__name__)
UPLOAD_PAGE = "/h5/advisor/upload.html"  # bare: the client adds a single-use ticket when it opens it
UPLOAD_MINIAPP_PATH = "pages/upload/upload"


class UnsupportedFile(YuntingError):
    status_code = 422
    code = "unsupported_file"


def check_content(data: bytes, max_bytes: int):
    """The file's type from its content, within the size limit; 413/422 with words a customer understands."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(
            f"文件太大了：最大 {max_bytes // (1024 * 1024)} MB，请压缩后再发。", code="file_too_large"
        )
    if not data:
        raise UnsupportedFile("文件是空的，请重新选择。", code="empty_file")
    found = sniff(data[:16])
    if found is None:
        raise UnsupportedFile(f"只能发送{ACCEPTED}。", code="unsupported_file")
    return found


async def do_receive_document(
    session: AsyncSession,
    redis: Redis,
    triage: Triage,
    store: DocumentStore,
    *,
    customer_id: int,
    channel: str,
    data: bytes,
    max_bytes: int,
    platform_msg_id: str | None,
    request_id: int | None = None,
    platform_media_id: str | None = None,
) -> tuple[Document, Received]:
    """Check, seal, record, then put a message in the customer's conversation (dedup on the platform id)."""
    if platform_msg_id:
        existing = await conversations.message_by_platform_id(session, channel=channel, platform_msg_id=platform_msg_id)
        document_id = (existing.payload or {}).get("document_id") if existing is not None else None
        if existing is not None and document_id:
            document = await session.get(Document, document_id)
            conversation = await session.get(Conversation, existing.conversation_id)
            assert document is not None and conversation is not None  # the message's references
            return document, Received(existing, conversation, duplicate=True)
    found = check_content(data, max_bytes)
    request = await _open_request(session, customer_id, request_id)
    stored = await store.put(data)
    conversation = await conversation_service.open_for_message(session, customer_id=customer_id, channel=channel)
    assert conversation.id is not None
    document = Document(
        customer_id=customer_id,
        conversation_id=conversation.id,
        request_id=request.id if request else None,
        channel=channel,
        kind=found.kind,
        content_type=found.content_type,
        size_bytes=stored.size,
        sha256=stored.sha256,
        stored_sha256=stored.stored_sha256,
        vault_key_id=stored.key_id,
        storage_path=stored.path,
        platform_media_id=platform_media_id,
    )
    session.add(document)
    await session.commit()
    label = found.label + (f"（回复：{request.what}）" if request else "")
    received = await do_receive_customer_message(
        session,
        redis,
        triage,
        customer_id=customer_id,
        channel=channel,
        text=f"[资料] {label}",
        platform_msg_id=platform_msg_id,
        kind="document",
        payload={"type": "document", "document_id": document.id, "kind": found.kind, "size_bytes": stored.size},
    )
    document.message_id, document.conversation_id = received.message.id, saved_id(received.conversation)
    if request is not None:
        request.state, request.fulfilled_at = "fulfilled", utcnow()
    audit(
        session,
        actor_kind="customer",
        actor_id=customer_id,
        action="document_upload",
        subject=f"document:{document.id}",
        sha256=stored.sha256,
        size_bytes=stored.size,
        request_id=request.id if request else None,
    )
    await session.commit()
    if received.conversation.agent_id is not None:
        await publish(
            redis,
            agent_channel(received.conversation.agent_id),
            {"type": "document", "conversation_id": received.conversation.id, "document_id": document.id},
        )
    return document, received


async def _open_request(session: AsyncSession, customer_id: int, request_id: int | None) -> DocumentRequest | None:
    """The request this upload answers: the one named, else none (an OA image answers the oldest open one)."""
    if request_id is None:
        return None
    request = await session.get(DocumentRequest, request_id)
    if request is None or request.customer_id != customer_id:
        raise ResourceNotFound("document request not found")
    if request.state != "open":
        raise Conflict("这份资料已经发过了。", code="request_fulfilled")
    return request


class OaImageIntake:
    """The official account's image messages: the picture is fetched through `/cgi-bin/media/get` (WeChat keeps
    it 3 days) and stored like an upload; it answers the customer's oldest open document request."""

    def __init__(self, platform: WeChatPlatform, store: DocumentStore, triage: Triage, max_bytes: int) -> None:
        self.platform, self.store, self.triage, self.max_bytes = platform, store, triage, max_bytes

    async def __call__(self, session: AsyncSession, received: Received, media_id: str) -> Document | None:
        assert received.conversation.id is not None
        if not media_id:
            return None
        try:
            data, _declared = await self.platform.get_media(media_id, self.max_bytes)
            found = check_content(data, self.max_bytes)
        except WeChatApiError as exc:
            log.warning("official-account image of message %s not fetched (%s)", received.message.id, exc.errcode)
            return None
        except YuntingError as exc:
            log.warning("official-account image of message %s refused (%s)", received.message.id, exc.code)
            return None
        customer_id = received.conversation.customer_id
        request_id = await repository.oldest_open_request(session, customer_id)
        request = await session.get(DocumentRequest, request_id) if request_id else None
        stored = await self.store.put(data)
        document = Document(
            customer_id=customer_id,
            conversation_id=received.conversation.id,
            message_id=received.message.id,
            request_id=request_id,
            channel=received.message.channel,
            kind=found.kind,
            content_type=found.content_type,
            size_bytes=stored.size,
            sha256=stored.sha256,
            stored_sha256=stored.stored_sha256,
            vault_key_id=stored.key_id,
            storage_path=stored.path,
            platform_media_id=media_id,
        )
        session.add(document)
        await session.flush()
        message = await session.get(Message, received.message.id)
        assert message is not None  # received.message, stored
        message.payload = {**(message.payload or {}), "document_id": document.id, "kind": found.kind}
        if request is not None:
            request.state, request.fulfilled_at = "fulfilled", utcnow()
        audit(
            session,
            actor_kind="customer",
            actor_id=customer_id,
            action="document_upload",
            subject=f"document:{document.id}",
            sha256=stored.sha256,
            size_bytes=stored.size,
            request_id=request_id,
        )
        await session.commit()
        if received.conversation.agent_id is not None:
            await publish(
                self.triage.routing.redis,
                agent_channel(received.conversation.agent_id),
                {"type": "document", "conversation_id": received.conversation.id, "document_id": document.id},
            )
        return document


async def get_for_viewing(session: AsyncSession, *, agent: Agent, document_id: int) -> Document:
    """A document the agent may open: in a conversation they hold now, or any for supervisors."""
    document = await session.get(Document, document_id)
    if document is None:
        raise ResourceNotFound("document not found")
    conversation = await session.get(Conversation, document.conversation_id)
    assert conversation is not None  # the document's foreign key
    holds = conversation.agent_id == agent.id and conversation.state == ConversationState.WITH_AGENT
    if not holds and agent.role not in ("supervisor", "admin"):
        raise NotPermitted("only the agent holding the conversation or a supervisor may open its documents")
    return document


async def do_view(session: AsyncSession, *, agent: Agent, document_id: int) -> Document:
    """Audited and committed before the content is sent."""
    document = await get_for_viewing(session, agent=agent, document_id=document_id)
    audit(
        session,
        actor_kind="agent",
        actor_id=agent.id,
        action="document_view",
        subject=f"document:{document.id}",
        conversation_id=document.conversation_id,
        sha256=document.sha256,
    )
    await session.commit()
    return document


async def do_request_document(
    session: AsyncSession, delivery: Delivery, *, agent: Agent, conversation_id: int, what: str
) -> DocumentRequest:
    """The agent asks for a document: a request card the customer answers with an upload."""
    assert agent.id is not None
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        raise ResourceNotFound("conversation not found")
    if conversation.agent_id != agent.id or conversation.state != ConversationState.WITH_AGENT:
        raise NotPermitted("claim the conversation before acting on it")
    assert conversation.id is not None
    request = DocumentRequest(
        conversation_id=conversation.id, customer_id=conversation.customer_id, agent_id=agent.id, what=what.strip()
    )
    session.add(request)
    await session.flush()
    card = Message(
        conversation_id=conversation.id,
        customer_id=conversation.customer_id,
        channel=conversation.current_channel,
        direction=Direction.OUT,
        sender_kind=SenderKind.AGENT,
        agent_id=agent.id,
        kind="document_request",
        text=f"请上传：{request.what}（可拍照或选择 PDF 文件；在公众号里可直接发送图片）",
        payload={
            "type": "document_request",
            "request_id": request.id,
            "what": request.what,
            "url": f"{UPLOAD_PAGE}?request_id={request.id}",
            "miniapp_path": f"{UPLOAD_MINIAPP_PATH}?request_id={request.id}",
        },
    )
    session.add(card)
    audit(
        session,
        actor_kind="agent",
        actor_id=agent.id,
        action="document_request",
        subject=f"conversation:{conversation.id}",
        request_id=request.id,
    )
    escalation = await conversations.latest_escalation(session, conversation.id)
    if escalation is not None and escalation.first_response_at is None:
        escalation.first_response_at = utcnow()
    await session.commit()
    await delivery.deliver(conversation, [card])
    return request
