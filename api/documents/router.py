"""Documents over HTTP: the customer's upload (multipart, as `wx.uploadFile` sends it), the agent's list, view
(audited, streamed from the vault) and request card. Thin: the work is in flows."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from fastapi.responses import StreamingResponse

from api.agents.flows import get_for_agent
from api.bounds import RecordId
from api.customers.models import Channel
from api.deps import (
    CurrentAgent,
    CurrentCustomer,
    DeliveryDep,
    DocumentsDep,
    RedisDep,
    SessionDep,
    SettingsDep,
    TriageDep,
)
from api.documents import flows, repository
from api.documents.models import Document, DocumentRequest
from api.documents.schemas import DocumentPublic, RequestCreate, RequestPublic, Uploaded
from api.errors import ResourceNotFound

router = APIRouter(tags=["documents"])
UPLOAD_PATH = "/miniapp/documents"


@router.post(UPLOAD_PATH, response_model=Uploaded)
async def upload(
    customer: CurrentCustomer,
    session: SessionDep,
    redis: RedisDep,
    triage: TriageDep,
    settings: SettingsDep,
    store: DocumentsDep,
    file: Annotated[UploadFile, File(description="a photo (JPG/PNG/WEBP/HEIC) or a PDF")],
    client_msg_id: Annotated[str, Form(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")],
    request_id: Annotated[RecordId | None, Form()] = None,
):
    """A photo or PDF into the customer's conversation (413 over the size limit, 422 for other content)."""
    assert customer.id is not None
    data = await file.read(settings.document_max_bytes + 1)
    document, received = await flows.do_receive_document(
        session,
        redis,
        triage,
        store,
        customer_id=customer.id,
        channel=Channel.MINIAPP,
        data=data,
        max_bytes=settings.document_max_bytes,
        platform_msg_id=f"{customer.id}:{client_msg_id}",
        request_id=request_id,
    )
    return Uploaded(document=_public(document), message_id=received.message.id, duplicate=received.duplicate)


@router.get("/miniapp/document-requests/{request_id}", response_model=RequestPublic)
async def my_request(request_id: RecordId, customer: CurrentCustomer, session: SessionDep):
    """What the agent asked for (the upload page shows it)."""
    request = await session.get(DocumentRequest, request_id)
    if request is None or request.customer_id != customer.id:
        raise ResourceNotFound("document request not found")
    return RequestPublic.model_validate(request, from_attributes=True)


@router.get("/agents/conversations/{conversation_id}/documents", response_model=list[DocumentPublic])
async def list_documents(conversation_id: RecordId, agent: CurrentAgent, session: SessionDep):
    """The conversation's documents (what they are, not their content)."""
    conversation = await get_for_agent(session, agent=agent, conversation_id=conversation_id)
    return [_public(d) for d in await repository.list_for_conversation(session, conversation.id)]


@router.get("/agents/documents/{document_id}")
async def view(document_id: RecordId, agent: CurrentAgent, session: SessionDep, store: DocumentsDep):
    """The content, for the agent holding the conversation (or a supervisor); audited before it is sent."""
    document = await flows.do_view(session, agent=agent, document_id=document_id)
    chunks = store.open(document.storage_path, sha256=document.sha256, stored_sha256=document.stored_sha256)
    headers = {
        "X-Content-SHA256": document.sha256,
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "Content-Disposition": f'inline; filename="document-{document.id}"',
    }
    return StreamingResponse(chunks, media_type=document.content_type, headers=headers)


@router.get("/agents/conversations/{conversation_id}/document-requests", response_model=list[RequestPublic])
async def list_requests(conversation_id: RecordId, agent: CurrentAgent, session: SessionDep):
    conversation = await get_for_agent(session, agent=agent, conversation_id=conversation_id)
    rows = await repository.requests_of_conversation(session, conversation.id)
    return [RequestPublic.model_validate(r, from_attributes=True) for r in rows]


@router.post("/agents/conversations/{conversation_id}/document-requests", response_model=RequestPublic)
async def request_document(
    conversation_id: RecordId, body: RequestCreate, agent: CurrentAgent, session: SessionDep, delivery: DeliveryDep
):
    """A request card: the customer answers it with an upload (or, on the official account, an image)."""
    request = await flows.do_request_document(
        session, delivery, agent=agent, conversation_id=conversation_id, what=body.what
    )
    return RequestPublic.model_validate(request, from_attributes=True)


def _public(document: Document) -> DocumentPublic:
    return DocumentPublic.model_validate(document, from_attributes=True)
