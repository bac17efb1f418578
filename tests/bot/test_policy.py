"""The triage policy without any I/O."""

from __future__ import annotations

from bot.context import ConversationContext
from bot.nlu import Entity, NluParse
from bot.policy import decide
from bot.scenarios import load_catalog

CATALOG = load_catalog()


def context(**values) -> ConversationContext:
    return ConversationContext(conversation_id=1, customer_id=1, state="bot", current_channel="miniapp", **values)


def parse(intent: str, confidence: float = 0.95, entities=(), ranking=()) -> NluParse:
    return NluParse(text="", intent=intent, confidence=confidence, entities=tuple(entities), ranking=tuple(ranking))


def test_a_known_slot_is_never_asked_again():
    ctx = context(intent="report_loss", slots={"card_type": "credit"})
    decision = decide(ctx, parse("report_loss"), CATALOG, threshold=0.5)
    assert "信用卡还是借记卡" not in decision.reply and "最后四位" in decision.reply


def test_an_entity_in_the_message_fills_the_form_and_completes_it():
    ctx = context(intent="report_loss", slots={"card_type": "debit"})
    decision = decide(ctx, parse("inform", entities=[Entity("card_last4", "1234")]), CATALOG, threshold=0.5)
    assert decision.escalation is not None and decision.escalation.skill_group == "cards"
    assert "1234" in decision.reply and "借记卡" in decision.reply


def test_first_low_confidence_turn_asks_with_two_guesses_and_the_second_escalates():
    ranking = [("nlu_fallback", 0.4), ("installment", 0.3), ("repayment_negotiation", 0.25)]
    first = decide(context(), parse("nlu_fallback", 0.4, ranking=ranking), CATALOG, threshold=0.5)
    assert first.escalation is None and "账单分期" in first.reply and "协商还款" in first.reply
    second = decide(
        context(low_confidence_turns=1), parse("nlu_fallback", 0.4, ranking=ranking), CATALOG, threshold=0.5
    )
    assert second.escalation is not None and second.escalation.reason == "low_confidence"


def test_request_human_escalates_at_once_to_the_group_of_the_current_business():
    decision = decide(context(intent="loan_signing"), parse("request_human"), CATALOG, threshold=0.5)
    assert decision.escalation.reason == "request_human"
    assert decision.escalation.skill_group == "loans" and decision.escalation.mode == "video"


def test_complaint_escalates_as_urgent():
    decision = decide(context(), parse("complaint"), CATALOG, threshold=0.5)
    assert decision.escalation.priority > 0


def test_small_talk_keeps_the_business_intent():
    decision = decide(context(intent="report_loss"), parse("thanks"), CATALOG, threshold=0.5)
    assert decision.intent == "report_loss" and decision.escalation is None


def test_a_vague_yes_after_a_clarifying_question_counts_as_the_second_unclear_turn():
    decision = decide(context(low_confidence_turns=1), parse("affirm", 0.97), CATALOG, threshold=0.5)
    assert decision.escalation is not None and decision.escalation.reason == "low_confidence"
