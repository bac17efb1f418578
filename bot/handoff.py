"""The handoff card: what an agent reads instead of asking the customer again."""

from __future__ import annotations

from typing import Any

from bot.context import ConversationContext
from bot.policy import EscalationOrder, _slot_label, describe_slot_value
from bot.scenarios import Scenario

CHANNEL_NAMES = {"wechat_oa": "公众号", "miniapp": "小程序"}
REASON_NAMES = {
    "request_human": "客户要求转人工",
    "low_confidence": "机器人连续两次未能理解",
    "nlu_unavailable": "智能客服暂不可用",
}


def build_handoff_card(
    context: ConversationContext,
    order: EscalationOrder,
    catalog: dict[str, Scenario],
) -> dict[str, Any]:
    """A JSON-ready card: intent, confidence, slots, scenario, what the bot said, path, identity, summary."""
    scenario = catalog.get(context.intent or "")
    path = " → ".join(CHANNEL_NAMES.get(c, c) for c in context.channel_path)
    return {
        "intent": context.intent,
        "confidence": context.confidence,
        "slots": dict(context.slots),
        "scenario": scenario.title if scenario else None,
        "mode": order.mode,
        "skill_group": order.skill_group,
        "priority": order.priority,
        "reason": order.reason,
        "bot_said": list(context.bot_said),
        "channel_path": list(context.channel_path),
        "identity_status": context.identity_status,
        "recent_cases": [case.as_card_line() for case in context.recent_cases],
        "summary": summarize(context, order, scenario, path),
    }


def summarize(context: ConversationContext, order: EscalationOrder, scenario: Scenario | None, path: str) -> str:
    """One paragraph in Chinese for the agent."""
    parts = [f"客户经{path or '未知渠道'}来访"]
    if scenario:
        parts.append(f"，诉求为「{scenario.title}」")
        if context.confidence is not None:
            parts.append(f"（识别置信度{context.confidence:.0%}）")
    else:
        parts.append("，诉求尚未识别")
    if context.slots:
        known = "、".join(f"{_slot_label(k)}{describe_slot_value(v)}" for k, v in context.slots.items())
        parts.append(f"；已提供：{known}")
    parts.append(f"；转人工原因：{REASON_NAMES.get(order.reason, scenario.title if scenario else order.reason)}")
    if order.mode == "video":
        parts.append("；需视频核验身份")
    if context.recent_cases:
        latest = context.recent_cases[0]
        parts.append(
            f"；近30天办理过{len(context.recent_cases)}件，最近一件「{latest.title or '业务'}」{latest.status}"
        )
    last_customer = [line.text for line in context.transcript if line.sender_kind == "customer"][-1:]
    if last_customer:
        parts.append(f"。客户最后说：“{last_customer[0][:60]}”")
    return "".join(parts) + "。"
