"""Service hours per skill group, with holidays and 调休 workdays (pure)."""

from __future__ import annotations

from datetime import date, datetime

from bot.service_hours import GroupHours, ServiceHours, load_hours

HOURS = ServiceHours(
    groups={
        "loans": GroupHours(label="贷款组", days=[1, 2, 3, 4, 5], open="09:00", close="17:30"),
        "cards": GroupHours(label="卡片组", open_on_holidays=True),
        "general": GroupHours(label="综合组"),
    },
    holidays=[date(2027, 10, 1)],
    workdays=[date(2027, 10, 9)],  # a Saturday worked
)


def test_a_weekday_group_is_open_in_its_hours_only():
    assert HOURS.is_open("loans", datetime(2027, 9, 29, 9, 0))  # a Wednesday
    assert not HOURS.is_open("loans", datetime(2027, 9, 29, 17, 30))  # closing time is closed
    assert not HOURS.is_open("loans", datetime(2027, 9, 25, 10, 0))  # a Saturday


def test_holidays_close_a_group_unless_it_never_closes_and_a_worked_saturday_opens_it():
    assert not HOURS.is_open("loans", datetime(2027, 10, 1, 10, 0))
    assert not HOURS.is_open("general", datetime(2027, 10, 1, 10, 0))
    assert HOURS.is_open("cards", datetime(2027, 10, 1, 3, 0))  # loss reports can't wait
    assert HOURS.is_open("loans", datetime(2027, 10, 9, 10, 0))


def test_the_customer_is_told_the_hours_in_plain_words():
    assert HOURS.describe("loans") == "工作日 09:00–17:30，节假日除外"
    assert HOURS.describe("cards") == "每天"
    assert HOURS.describe("general") == "每天（节假日除外）"
    assert HOURS.label("loans") == "贷款组"


def test_the_shipped_file_names_every_skill_group():
    assert set(load_hours().groups) == {"cards", "loans", "accounts", "wealth", "general"}
