"""Mini-program sign-in: a wx.login code becomes our own session token (never WeChat's session_key)."""

from __future__ import annotations

from redis.asyncio import Redis
from sqlmodel.ext.asyncio.session import AsyncSession

from api.audit.models import audit
from api.channels.wechat_platform import WeChatLoginFailed, WeChatPlatform
from api.customers import service as customers
from api.customers.models import Channel
from api.errors import BadRequest, UpstreamUnavailable
from api.security import issue_token
from api.settings import Settings

# WeChat's answers to a bad code, in words a client developer can act on.
_CODE_ERRORS = {
    40029: ("wechat_code_invalid", "登录凭证无效或已过期，请重新登录（wx.login code invalid or expired）"),
    40163: ("wechat_code_used", "登录凭证已被使用，请重新登录（wx.login code already used）"),
    40226: ("wechat_user_blocked", "该微信用户被限制登录"),
}
SESSION_KEY_TTL_S = 3 * 24 * 3600


async def login(
    session: AsyncSession, redis: Redis, platform: WeChatPlatform, settings: Settings, *, code: str
) -> tuple[str, int]:
    """(token, customer_id) for a fresh wx.login code."""
    try:
        identity = await platform.code_to_session(code)
    except WeChatLoginFailed as exc:
        if exc.errcode in _CODE_ERRORS:
            error_code, message = _CODE_ERRORS[exc.errcode]
            raise BadRequest(message, code=error_code) from exc
        raise UpstreamUnavailable("WeChat login is unavailable, please retry", code="wechat_unavailable") from exc
    customer = await customers.link_identity(
        session,
        channel=Channel.MINIAPP,
        app_id=settings.miniapp_app_id,
        openid=identity.openid,
        unionid=identity.unionid,
    )
    # Kept server-side only (needed later to decrypt data the mini-program sends, e.g. a phone number).
    await redis.set(f"yt:miniapp:session_key:{customer.id}", identity.session_key, ex=SESSION_KEY_TTL_S)
    audit(
        session, actor_kind="customer", actor_id=customer.id, action="miniapp_login", subject=f"customer:{customer.id}"
    )
    assert customer.id is not None
    token = issue_token(
        settings.signing_key(), kind="customer", subject=customer.id, ttl_s=settings.customer_session_ttl_s
    )
    return token, customer.id
