"""The triage policy: pure decisions from the conversation context and one NLU parse.

No I/O here, so every rule is testable without Rasa, Redis or SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bot import cases
from bot.context import ConversationContext
from bot.nlu import FALLBACK_INTENT, NluParse
from bot.scenarios import Scenario

# Intents that carry no business request of their own: they never replace the conversation's intent.
SMALL_TALK = frozenset({"greet", "goodbye", "thanks", "affirm", "deny", "inform", "out_of_scope"})
ESCALATE_AFTER_LOW_CONFIDENCE_TURNS = 2
# Replies that don't answer a clarifying question.
UNRESOLVING = frozenset({"greet", "affirm", "deny", "out_of_scope"})


@dataclass(frozen=True)
class EscalationOrder:
    reason: str
    skill_group: str
    priority: int
    mode: str  # "text" or "video"


@dataclass
class Decision:
    """What the bot does with one message."""

    reply: str
    intent: str | None
    confidence: float | None
    slots: dict[str, Any] = field(default_factory=dict)
    low_confidence_turns: int = 0
    escalation: EscalationOrder | None = None


def merge_slots(known: dict[str, Any], parse: NluParse) -> dict[str, Any]:
    """Known slots plus the entities in this message (a newer value wins)."""
    merged = dict(known)
    for entity in parse.entities:
        merged[entity.entity] = entity.value
    return merged


def decide(
    context: ConversationContext,
    parse: NluParse,
    catalog: dict[str, Scenario],
    *,
    threshold: float,
) -> Decision:
    """Answer, ask, clarify or escalate."""
    slots = merge_slots(context.slots, parse)
    if parse.intent == FALLBACK_INTENT or parse.confidence < threshold or parse.intent not in catalog:
        return _low_confidence(context, parse, catalog, slots)
    if context.low_confidence_turns and parse.intent in UNRESOLVING:
        # "嗯" or "you know" after a clarifying question still leaves us guessing: that's a second unclear turn.
        return _low_confidence(context, parse, catalog, slots)
    intent = parse.intent
    if intent == "inform" and context.intent in catalog:
        # A bare detail continues whatever the customer was already doing.
        intent = context.intent
    if intent == "request_human":
        return _escalate(context.intent, catalog, slots, parse, reason="request_human", base=catalog[intent])
    if intent == "request_video":
        # Like 转人工: the business already under way decides the group, the mode is video.
        business = context.intent if context.intent in catalog and context.intent not in SMALL_TALK else None
        return _escalate(business or intent, catalog, slots, parse, reason=intent, base=catalog[intent])
    if intent == "case_status":
        return _case_status(context, parse, catalog, slots)
    scenario = catalog[intent]
    if scenario.on_repeat:
        done = cases.finished_match(context.recent_cases, scenario.intent, slots)
        if done is not None:
            reply = cases.describe(done, describe_slots(done.slots)) + scenario.on_repeat
            return Decision(reply, scenario.intent, parse.confidence, slots)
    conversation_intent = context.intent if intent in SMALL_TALK else intent
    if scenario.kind == "answer":
        return Decision(scenario.reply, conversation_intent, parse.confidence, slots)
    if scenario.kind == "form":
        return _continue_form(scenario, catalog, slots, parse)
    return _escalate(intent, catalog, slots, parse, reason=intent, base=scenario)


def _case_status(
    context: ConversationContext, parse: NluParse, catalog: dict[str, Scenario], slots: dict[str, Any]
) -> Decision:
    """A follow-up on an earlier case: its status and outcome; its details on file are confirmed, not asked."""
    said = {entity.entity: entity.value for entity in parse.entities}
    case = cases.pick(context.recent_cases, said)
    if case is None:
        return Decision(catalog["case_status"].reply, context.intent, parse.confidence, slots)
    reply = cases.describe(case, describe_slots(case.slots)) + "需要继续办理请说“转人工”。"
    business = case.intent if case.intent in catalog and case.intent not in SMALL_TALK else context.intent
    return Decision(reply, business, parse.confidence, {**case.slots, **slots})


def _low_confidence(
    context: ConversationContext, parse: NluParse, catalog: dict[str, Scenario], slots: dict[str, Any]
) -> Decision:
    turns = context.low_confidence_turns + 1
    if turns >= ESCALATE_AFTER_LOW_CONFIDENCE_TURNS:
        decision = _escalate(context.intent, catalog, slots, parse, reason="low_confidence")
        decision.reply = "抱歉，我没能理解清楚，正在为您转接人工客服。"
        decision.low_confidence_turns = turns
        return decision
    guesses = [catalog[name].title for name in parse.top_intents(2, exclude=SMALL_TALK) if name in catalog]
    if len(guesses) == 2:
        reply = f"抱歉，我没太听明白。您是想办理「{guesses[0]}」还是「{guesses[1]}」？也可以说“转人工”。"
    else:
        reply = "抱歉，我没太听明白。请换个说法告诉我您要办的事，或者说“转人工”。"
    return Decision(reply, context.intent, parse.confidence, slots, low_confidence_turns=turns)


def _continue_form(
    scenario: Scenario, catalog: dict[str, Scenario], slots: dict[str, Any], parse: NluParse
) -> Decision:
    missing = [spec for spec in scenario.slots if not slots.get(spec.name)]
    confirmed = "、".join(
        f"{_slot_label(spec.name)}：{describe_slot_value(slots[spec.name])}"
        for spec in scenario.slots
        if slots.get(spec.name)
    )
    if missing:
        prefix = f"好的，已记下{confirmed}。" if confirmed else ""
        return Decision(prefix + missing[0].prompt, scenario.intent, parse.confidence, slots)
    if scenario.on_complete == "answer":
        return Decision(scenario.reply, scenario.intent, parse.confidence, slots)
    mode = "video" if scenario.on_complete == "escalate_video" else "text"
    decision = _escalate(scenario.intent, catalog, slots, parse, reason=scenario.intent, base=scenario, mode=mode)
    decision.reply = f"已确认{confirmed}。" + scenario.reply
    return decision


def _escalate(
    intent: str | None,
    catalog: dict[str, Scenario],
    slots: dict[str, Any],
    parse: NluParse,
    *,
    reason: str,
    base: Scenario | None = None,
    mode: str | None = None,
) -> Decision:
    """Hand to a human; the skill group comes from the business intent when there is one."""
    business = catalog.get(intent) if intent else None
    routed = business if business and business.intent not in SMALL_TALK else base
    group = routed.group if routed else "general"
    priority = max((s.priority for s in (routed, base) if s), default=0)
    if mode is None:
        video = any(s.kind == "escalate_video" for s in (routed, base) if s)
        mode = "video" if video else "text"
    reply = base.reply if base else "正在为您转接人工客服。"
    return Decision(
        reply,
        intent if intent and intent not in SMALL_TALK else None,
        parse.confidence,
        slots,
        escalation=EscalationOrder(reason=reason, skill_group=group, priority=priority, mode=mode),
    )


_SLOT_LABELS = {"card_type": "卡片类型", "card_last4": "卡号尾号", "phone": "手机号", "amount": "金额", "date": "日期"}
_VALUE_LABELS = {"credit": "信用卡", "debit": "借记卡"}


def _slot_label(name: str) -> str:
    return _SLOT_LABELS.get(name, name)


def describe_slot_value(value: Any) -> str:
    return _VALUE_LABELS.get(str(value), str(value))


def describe_slots(slots: dict[str, Any]) -> str:
    """「信用卡，卡号尾号4321」: the card type says itself, the rest with their labels."""
    parts = [
        describe_slot_value(value) if name == "card_type" else f"{_slot_label(name)}{describe_slot_value(value)}"
        for name, value in slots.items()
        if value
    ]
    return "，".join(parts)
