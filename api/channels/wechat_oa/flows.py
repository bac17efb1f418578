"""One push from WeChat, answered under the 5-second rule.

WeChat waits 5 s for the HTTP answer, then drops the connection and retries (3 tries in all). So the
work (identify the customer, store the message, let the bot answer) runs in its own task, shielded
from the request, and the handler waits at most `oa_reply_budget_ms` for it:

- ready in time: the replies go back passively in the HTTP answer (the sender handed them to this
  handler's `PassiveWindow` instead of sending them — see outbound.py), and are remembered so that
  a WeChat retry of the same push gets the same answer;
- not ready: the handler answers `success` at once, shows "typing", and the task, still running,
  delivers the replies through the customer-service API when they are ready.

Retries never process a message twice: `do_receive_customer_message` dedups on the platform id
(MsgId; events: FromUserName + CreateTime) under a per-customer Redis lock, across all workers, and
the transcript holds the message once (a unique constraint).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, cast

from redis.asyncio import Redis
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from api.appointments.service import booking_invite
from api.channels.wechat_oa import repository, service
from api.channels.wechat_oa.crypto import Keyring
from api.channels.wechat_oa.envelope import EnvelopeCodec, Push, PushQuery
from api.channels.wechat_oa.freshness import PushFreshness
from api.channels.wechat_oa.outbound import CARD_KIND, OaOutbound, PassiveReply, PassiveWindow
from api.channels.wechat_oa.quota import ServiceWindows
from api.channels.wechat_oa.xml import text_reply
from api.channels.wechat_platform import WeChatPlatform
from api.conversations.delivery import Delivery
from api.conversations.flows import Triage, do_receive_customer_message, video_invite
from api.conversations.models import ConversationState, Direction, Message, SenderKind
from api.conversations.turn_writes import Received
from api.conversations.turns import EarlyParse
from api.customers.models import Channel, Customer
from api.db import saved_id, unit_of_work
from api.errors import UpstreamUnavailable
from api.settings import Settings

log = logging.getLogger(__name__)

SUCCESS = "success"  # WeChat's "received, nothing to say (now)"
WELCOME = (
    "您好，欢迎关注云厅！直接发文字或语音告诉我您要办的事，比如“信用卡挂失”“查账单”。"
    "需要真人请说“转人工”，需要当面办理请点菜单「视频客服」。"
)
SCAN_ACK = "欢迎回来！有什么可以帮您？直接发文字或语音告诉我就行。"
IMAGE_ACK = "图片收到了，客服会看到。请再用一句话说说您要办的事。"
IMAGE_ACK_WITH_AGENT = "图片收到了，客服会看到。"
VOICE_UNCLEAR = "抱歉，这段语音没听清。请直接打字告诉我，或点菜单「视频客服」和客服当面说。"
VIDEO_CARD_TITLE = "视频客服：点击进入，与客服视频办理"
VIDEO_SERVICE_KEY = "VIDEO_SERVICE"
BOOKING_KEY = "BOOK_APPOINTMENT"  # the menu item 预约客户经理
# A retried push gets the passive answer it missed; WeChat's retries come within ~15 s.
PASSIVE_MEMORY_S = 3600
LINK_ATTEMPTS = 5
# WeChat drops a push's connection after 5 s; a passive answer must be on its way before that, with a margin for
# writing it out. A push already too old still gets a moment (a ready answer goes passively).
WECHAT_DEADLINE_S, DEADLINE_MARGIN_S, MIN_BUDGET_S = 5.0, 0.5, 0.05

# A push's work: the session, the customer, and the triage whose delivery answers into the push's passive window.
Work = Callable[[AsyncSession, int, Triage], Awaitable[Received]]


async def do_acknowledge(
    session: AsyncSession,
    delivery: Delivery,
    received: Received,
    *,
    text: str,
    kind: str = "text",
    payload: dict[str, Any] | None = None,
) -> Message:
    """The bot's short answer to something it doesn't parse (an image, a menu tap): stored, then delivered."""
    assert received.conversation.id is not None
    reply = Message(
        conversation_id=received.conversation.id,
        customer_id=received.conversation.customer_id,
        channel=received.message.channel,
        direction=Direction.OUT,
        sender_kind=SenderKind.BOT,
        kind=kind,
        text=text,
        payload=payload,
        in_reply_to=received.message.id,
    )
    session.add(reply)
    await session.commit()
    await delivery.deliver(received.conversation, [reply])
    return reply


@dataclass
class Identified:
    """Who sent a push: the customer, whether messages wait for them, whether identifying them may have written."""

    customer_id: int
    waiting: bool
    wrote: bool
    # The row of a customer linked just now. SQLAlchemy's identity map holds rows weakly: kept here, the turn that
    # starts their first conversation finds it in the session instead of reading it again.
    linked: Customer | None = None


class OaChannel:
    """The official account's push handling: decode, dispatch by type, answer within the budget."""

    def __init__(
        self, settings: Settings, *, engine: AsyncEngine, redis: Redis, triage: Triage, platform: WeChatPlatform
    ) -> None:
        key = settings.oa_encoding_aes_key
        previous = settings.oa_previous_encoding_aes_key
        keyring = Keyring.of(
            settings.oa_app_id,
            key.get_secret_value() if key else None,
            previous.get_secret_value() if previous else None,
        )
        self.codec = EnvelopeCodec(settings.oa_token.get_secret_value(), keyring)
        self.app_id = settings.oa_app_id
        self.engine, self.redis, self.triage, self.platform = engine, redis, triage, platform
        self.windows = ServiceWindows(redis, settings.oa_app_id)
        self.freshness = PushFreshness(redis, settings.oa_app_id, settings.oa_push_max_age_s)
        self.outbound = OaOutbound(
            engine=engine,
            redis=redis,
            platform=platform,
            windows=self.windows,
            app_id=settings.oa_app_id,
            miniapp_app_id=settings.miniapp_app_id,
            card_thumb_media_id=settings.oa_card_thumb_media_id,
        )
        self.budget_s = settings.oa_reply_budget_ms / 1000
        self.max_body_bytes = settings.oa_max_body_bytes
        self.max_text_chars = settings.max_message_chars
        self._tasks: set[asyncio.Task] = set()
        # Stores an image message's picture as a document (api/documents, set at start-up); None: not fetched.
        self.image_intake: Callable[[AsyncSession, Received, str], Awaitable[Any]] | None = None

    # -- entry points ---------------------------------------------------------------------

    def verify_url(self, *, signature: str, timestamp: str, nonce: str, echostr: str) -> str:
        """WeChat's server check (GET): echostr when the signature holds, else 403."""
        return self.codec.verify_url(signature_=signature, timestamp=timestamp, nonce=nonce, echostr=echostr)

    async def handle(self, query: PushQuery, body: bytes) -> str:
        """The HTTP answer to one push: a (sealed) passive reply, or `success`."""
        envelope = self.codec.open(query, body)
        await self.freshness.check(query, body)  # after the signature: only signed pushes get remembered
        push = envelope.push
        log.debug("push %s/%s from an openid", push.msg_type, push.event or "-")
        answer = await self._dispatch(push, self.budget_for(query.timestamp))
        if answer is None:
            return SUCCESS
        reply = text_reply(
            to_user=push.openid, from_user=push.to_user, content=answer.content, create_time=answer.create_time
        )
        return self.codec.seal(envelope, reply)

    async def aclose(self) -> None:
        """Let background deliveries finish before the engine and Redis go away."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=15)

    # -- dispatch -------------------------------------------------------------------------

    def budget_for(self, timestamp: str) -> float:
        """How long this push may wait for a passive answer: `oa_reply_budget_ms`, less what the push already
        spent on the way and queued before this handler ran. WeChat's 5 s run from its `timestamp` (whole
        seconds, so the age read here is never less than the real one); under overload a push that waited
        in the queue answers `success` sooner, and its answer goes by customer-service message."""
        try:
            age = time.time() - int(timestamp)
        except ValueError:
            return self.budget_s
        # The floor gives an old push its moment, but never more than configured.
        floor = min(MIN_BUDGET_S, self.budget_s)
        return max(floor, min(self.budget_s, WECHAT_DEADLINE_S - DEADLINE_MARGIN_S - max(0.0, age)))

    async def _dispatch(self, push: Push, budget_s: float) -> PassiveReply | None:
        work = await self._work_for(push)  # a text's parse is on its way before the window's round trip
        if push.interaction is not None:
            # The window opens when the user acts, whatever we answer; a retry doesn't reopen it.
            await self.windows.open(push.openid, push.interaction, interaction=push.dedup_key)
        if push.msg_type == "event" and push.event == "unsubscribe":
            async with unit_of_work(self.engine) as session:
                await service.set_reachable(session, app_id=self.app_id, openid=push.openid, reachable=False)
            return None
        return None if work is None else await self._within_budget(push, work, budget_s)

    async def _work_for(self, push: Push) -> Work | None:
        """What to do with this push; None for types we only acknowledge with `success`."""
        if push.msg_type == "text":
            text = push.get("Content")[: self.max_text_chars]
            return await self._text(push, text) if text else None
        if push.msg_type == "voice":
            recognized = push.get("Recognition")[: self.max_text_chars]
            if recognized:
                return await self._text(push, recognized)
            return self._acknowledged(
                push, "[语音]", VOICE_UNCLEAR, kind="voice", payload={"type": "voice", "media_id": push.get("MediaId")}
            )
        if push.msg_type == "image":
            pic_url, media_id = push.get("PicUrl"), push.get("MediaId")
            return self._with_image(
                self._acknowledged(
                    push,
                    f"[图片] {pic_url}".strip(),
                    IMAGE_ACK,
                    kind="image",
                    payload={"type": "image", "pic_url": pic_url, "media_id": media_id},
                    answer_with_agent=IMAGE_ACK_WITH_AGENT,
                ),
                media_id,
            )
        if push.msg_type == "event" and push.event == "CLICK" and push.get("EventKey") == BOOKING_KEY:
            return self._booking_card(push)
        if push.msg_type != "event":
            return None
        if push.event == "subscribe":
            scene = push.get("EventKey").removeprefix("qrscene_")
            return self._acknowledged(push, f"[关注公众号] {scene}".strip(), WELCOME, kind="event")
        if push.event == "SCAN":
            return self._acknowledged(push, f"[扫码] {push.get('EventKey')}".strip(), SCAN_ACK, kind="event")
        if push.event == "CLICK" and push.get("EventKey") == VIDEO_SERVICE_KEY:
            return self._video_card(push)
        if push.event == "CLICK":
            return lambda s, c, t: self._receive(s, c, t, push, text=f"[菜单] {push.get('EventKey')}", kind="event")
        return None  # LOCATION, VIEW and whatever WeChat adds: acknowledged with `success`

    async def _text(self, push: Push, text: str) -> Work:
        """A text for the bot. Its parse is on its way now, while the openid is looked up (on first contact,
        WeChat's user/info too); work that never runs leaves it to finish on its own within the NLU timeout."""
        early = await EarlyParse.start(self.triage.nlu, text)
        return lambda s, c, t: self._receive(s, c, t, push, text=text, early=early)

    def _acknowledged(
        self,
        push: Push,
        text: str,
        answer: str,
        *,
        kind: str,
        payload: dict[str, Any] | None = None,
        answer_with_agent: str | None = None,
    ) -> Work:
        """Store the push as ``text`` and answer ``answer`` (``answer_with_agent`` once a person has the case)."""

        async def work(session: AsyncSession, customer_id: int, triage: Triage) -> Received:
            received = await self._receive(session, customer_id, triage, push, text=text, kind=kind, payload=payload)
            if not received.duplicate:
                with_agent = received.conversation.state != ConversationState.BOT
                said = answer_with_agent if with_agent and answer_with_agent else answer
                await do_acknowledge(session, triage.delivery, received, text=said)
            return received

        return work

    def _with_image(self, work: Work, media_id: str) -> Work:
        """After the image message is stored (and acknowledged), its picture is fetched and kept as a document."""
        if self.image_intake is None:
            return work
        intake = self.image_intake

        async def with_image(session: AsyncSession, customer_id: int, triage: Triage) -> Received:
            received = await work(session, customer_id, triage)
            if not received.duplicate:
                await intake(session, received, media_id)
            return received

        return with_image

    def _booking_card(self, push: Push) -> Work:
        async def work(session: AsyncSession, customer_id: int, triage: Triage) -> Received:
            received = await self._receive(session, customer_id, triage, push, text="[菜单] 预约客户经理", kind="event")
            if not received.duplicate:
                await do_acknowledge(
                    session,
                    triage.delivery,
                    received,
                    text="预约客户经理：选一个方便的时间，客户经理按时视频或文字为您服务。",
                    payload=booking_invite(),
                )
            return received

        return work

    def _video_card(self, push: Push) -> Work:
        async def work(session: AsyncSession, customer_id: int, triage: Triage) -> Received:
            received = await self._receive(session, customer_id, triage, push, text="[菜单] 视频客服", kind="event")
            if not received.duplicate:
                # The video page of the customer's current conversation: the agent sees everything so far.
                assert received.conversation.id is not None
                await do_acknowledge(
                    session,
                    triage.delivery,
                    received,
                    text=VIDEO_CARD_TITLE,
                    kind=CARD_KIND,
                    payload=video_invite(received.conversation.id),
                )
            return received

        return work

    async def _receive(
        self,
        session: AsyncSession,
        customer_id: int,
        triage: Triage,
        push: Push,
        *,
        text: str,
        kind: str = "text",
        payload: dict[str, Any] | None = None,
        early: EarlyParse | None = None,
    ) -> Received:
        return await do_receive_customer_message(
            session,
            self.redis,
            triage,
            customer_id=customer_id,
            channel=Channel.WECHAT_OA,
            text=text,
            platform_msg_id=push.dedup_key,
            kind=kind,
            payload=payload,
            early=early,
        )

    # -- the 5-second rule ----------------------------------------------------------------

    async def _within_budget(self, push: Push, work: Work, budget_s: float) -> PassiveReply | None:
        window = PassiveWindow()
        task = self._spawn(self._run(window, push, work))
        received: Received | None = None
        try:
            received = await asyncio.wait_for(asyncio.shield(task), budget_s)
        except TimeoutError:
            # Not ready: `success` now, the answer by customer-service message; meanwhile, "typing…".
            self._spawn(self.outbound.show_typing(push.openid, interaction=push.dedup_key))
        except Exception as exc:
            raise UpstreamUnavailable(
                "the message could not be processed; WeChat will retry", code="oa_processing_failed"
            ) from exc
        messages = window.close()
        key = f"yt:oa:passive:{self.app_id}:{push.dedup_key}"
        if messages:
            answer = PassiveReply("\n\n".join(self.outbound.as_text(message) for message in messages), int(time.time()))
            # Remembered for a retry (WeChat retries only after 5 s without an answer): after the answer, not before.
            self._spawn(self.redis.set(key, answer.dumps(), ex=PASSIVE_MEMORY_S))
            return answer
        if received is not None and received.duplicate:
            # WeChat retries only when it got no answer: give the passive answer it missed, if there was one.
            return PassiveReply.loads(cast(str | None, await self.redis.get(key)))  # decode_responses=True: str
        return None

    async def _run(self, window: PassiveWindow, push: Push, work: Work) -> Received | None:
        # What this push's work delivers may go in its HTTP answer: the window travels with the triage it is given.
        triage = replace(self.triage, delivery=self.triage.delivery.answering(window))
        async with unit_of_work(self.engine) as session:
            who = await self._identify(session, push)  # referenced through the turn: see Identified.linked
            wrote = who.wrote
            if push.event == "subscribe":
                await service.set_reachable(session, app_id=self.app_id, openid=push.openid, reachable=True)
                wrote = True
            if wrote:
                # Settle the identity before waiting on the customer's lock (don't hold a write transaction). A
                # known, linked openid only read: its transaction goes on into the turn (two round trips fewer).
                await session.commit()
            window.customer_id = who.customer_id
            if who.waiting and push.interaction is not None:
                await self.outbound.flush_pending(who.customer_id)  # their window just opened: what waits goes first
            return await work(session, who.customer_id, triage)

    async def _identify(self, session: AsyncSession, push: Push) -> Identified:
        """The customer behind the openid, whether messages wait for them, and whether this may have written."""
        known, waiting, linked = await repository.get_identity_and_waiting(
            session, app_id=self.app_id, openid=push.openid
        )
        if known is not None:
            if not linked:  # a Redis round trip on every push only for openids still without their unionid
                await service.retry_unionid(session, self.redis, self.platform, app_id=self.app_id, identity=known)
            return Identified(known.customer_id, waiting, wrote=not linked)
        return await self._link(session, push)

    async def _link(self, session: AsyncSession, push: Push) -> Identified:
        """First sight of an openid: link it to a customer (asking user/info once), committed; and whether messages
        wait for that customer (read in the link's transaction: no second one just for it)."""
        # One worker links; WeChat's concurrent retries of the same first message wait here and then find
        # the link, instead of racing to create a customer.
        async with self.redis.lock(f"yt:oa:identify:{self.app_id}:{push.openid}", timeout=30, blocking_timeout=20):
            for attempt in range(1, LINK_ATTEMPTS + 1):
                try:
                    customer = await service.resolve_customer(
                        session, self.redis, self.platform, app_id=self.app_id, openid=push.openid
                    )
                    customer_id = saved_id(customer)
                    waiting = await repository.has_pending(session, customer_id)
                    await session.commit()
                    return Identified(customer_id, waiting, wrote=True, linked=customer)
                except OperationalError:
                    # SQLite refuses to write in a transaction that read before another writer committed
                    # ("database is locked" at once, no busy wait): nothing is written yet, so try again.
                    await session.rollback()
                    if attempt == LINK_ATTEMPTS:
                        raise
                    await asyncio.sleep(0.05 * attempt)
        raise AssertionError("unreachable")

    def _spawn(self, coroutine: Awaitable[Any]) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("official-account background work failed", exc_info=task.exception())
