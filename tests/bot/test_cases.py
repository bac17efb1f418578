"""Case memory in the policy (no I/O), and the trained NLU telling a follow-up from new business."""

from __future__ import annotations

from datetime import UTC, datetime

from bot.cases import CaseSummary
from bot.context import ConversationContext
from bot.nlu import Entity, NluParse, RasaClient
from bot.policy import decide
from bot.scenarios import load_catalog

CATALOG = load_catalog()
LOSS = CaseSummary(
    conversation_id=7,
    intent="report_loss",
    title="挂失",
    state="closed",
    disposition="resolved",
    slots={"card_type": "credit", "card_last4": "4321"},
    opened_at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
    closed_at=datetime(2026, 12, 1, 9, 50, tzinfo=UTC),
    agent_said="已为您临时挂失尾号4321的信用卡，新卡7个工作日内寄出。",
)
COMPLAINT = CaseSummary(
    conversation_id=9,
    intent="complaint",
    title="投诉",
    state="closed",
    disposition="follow_up",
    opened_at=datetime(2026, 12, 2, 8, 0, tzinfo=UTC),
)


def context(**values) -> ConversationContext:
    return ConversationContext(conversation_id=20, customer_id=1, state="bot", current_channel="miniapp", **values)


def parse(intent: str, *entities: Entity) -> NluParse:
    return NluParse(text="", intent=intent, confidence=0.95, entities=entities)


def test_a_follow_up_gets_the_cases_status_and_outcome_and_its_details_are_on_file():
    decision = decide(context(recent_cases=[LOSS]), parse("case_status"), CATALOG, threshold=0.5)
    assert decision.escalation is None
    assert "「挂失」" in decision.reply and "已办结" in decision.reply and "尾号4321" in decision.reply
    assert "新卡7个工作日内寄出" in decision.reply and "最后四位" not in decision.reply
    assert decision.intent == "report_loss" and decision.slots == {"card_type": "credit", "card_last4": "4321"}


def test_the_follow_up_is_about_the_case_that_matches_what_the_customer_names():
    ctx = context(recent_cases=[COMPLAINT, LOSS])  # newest first
    latest = decide(ctx, parse("case_status"), CATALOG, threshold=0.5)
    assert "「投诉」" in latest.reply and "跟进中" in latest.reply
    named = decide(ctx, parse("case_status", Entity("card_last4", "4321")), CATALOG, threshold=0.5)
    assert "「挂失」" in named.reply


def test_without_a_case_on_file_the_bot_says_so_and_starts_nothing():
    decision = decide(context(), parse("case_status"), CATALOG, threshold=0.5)
    assert decision.escalation is None and "没有查到" in decision.reply


def test_a_finished_loss_report_is_never_started_twice_but_another_card_is_reported():
    ctx = context(recent_cases=[LOSS])
    again = decide(ctx, parse("report_loss", Entity("card_type", "credit")), CATALOG, threshold=0.5)
    assert again.escalation is None and "不用再挂失" in again.reply and "已办结" in again.reply
    other = decide(
        ctx,
        parse("report_loss", Entity("card_type", "credit"), Entity("card_last4", "5678")),
        CATALOG,
        threshold=0.5,
    )
    assert other.escalation is not None and other.escalation.skill_group == "cards" and "5678" in other.reply


async def test_the_trained_model_reads_clear_follow_ups_as_case_status_and_a_loss_as_report_loss(rasa_url):
    client = RasaClient(rasa_url)
    try:
        for text in ("我刚才挂失的信用卡办好了吗", "办理进度怎么样了", "工单处理完了吗"):
            assert (await client.parse(text)).intent == "case_status", text
        assert (await client.parse("我的卡丢了怎么办")).intent == "report_loss"
    finally:
        await client.aclose()
