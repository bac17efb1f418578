"""The passive budget runs from when WeChat sent the push, not from when the handler got to it: a push that
queued under overload answers `success` sooner (its answer then goes by customer-service message), before
WeChat's 5 s are up and it gives up on the connection."""

from __future__ import annotations

import time

from redis.asyncio import Redis

from api.channels.wechat_oa.flows import MIN_BUDGET_S, OaChannel
from api.settings import Settings


def channel(budget_ms: int = 4000) -> OaChannel:
    settings = Settings(env="test", oa_reply_budget_ms=budget_ms)
    # budget_for needs none of its connections: a Redis client that never connects, no engine, no platform.
    return OaChannel(settings, engine=None, redis=Redis(), triage=None, platform=None)


def test_a_fresh_push_gets_the_configured_budget_less_at_most_the_timestamps_rounding():
    oa = channel()
    now = time.time()
    budget = oa.budget_for(str(int(now)))
    assert 3.5 - 0.05 <= budget <= 4.0
    assert oa.budget_for(str(int(now) + 30)) == 4.0  # a clock behind WeChat's: never more than configured
    assert channel(300).budget_for(str(int(now))) == 0.3
    # Below the floor for old pushes too (tests' "every answer is late" app): what is configured, no more.
    assert channel(1).budget_for(str(int(now))) == channel(1).budget_for(str(int(now) - 10)) == 0.001


def test_a_push_that_waited_gets_what_is_left_of_wechats_five_seconds():
    oa = channel()
    assert oa.budget_for(str(int(time.time()) - 3)) <= 1.5
    assert oa.budget_for(str(int(time.time()) - 10)) == MIN_BUDGET_S
    assert oa.budget_for("not a number") == 4.0
