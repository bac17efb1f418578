"""Privacy in logs and the session tokens."""

from __future__ import annotations

import logging

import pytest

from api.errors import NotAuthenticated
from api.masking import MaskingFilter, mask_sensitive
from api.security import issue_token, read_token


def test_id_card_and_phone_numbers_are_masked():
    text = "身份证110101199003071234卡号6222021234567890123手机13812345678尾号1234"
    masked = mask_sensitive(text)
    assert "110101199003071234" not in masked and "110101********1234" in masked
    assert "6222021234567890123" not in masked and "6222****0123" in masked
    assert "13812345678" not in masked and "138****5678" in masked
    assert masked.endswith("尾号1234")


def test_log_records_are_masked(caplog):
    logger = logging.getLogger("yunting.test")
    caplog.handler.addFilter(MaskingFilter())
    with caplog.at_level(logging.INFO):
        logger.info("customer said %s", "我的手机13812345678")
    assert "13812345678" not in caplog.text and "138****5678" in caplog.text


def test_uvicorn_access_lines_are_masked_and_still_formatted():
    from uvicorn.logging import AccessFormatter

    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", "/wechat/oa?nonce=13812345678", "1.1", 200),
        None,
    )
    assert MaskingFilter().filter(record)
    line = AccessFormatter("%(message)s", use_colors=False).format(record)
    assert "13812345678" not in line and "nonce=138****5678" in line and line.endswith("200")


def test_tokens_are_signed_typed_and_expire():
    key = b"k" * 32
    token = issue_token(key, kind="customer", subject=7, ttl_s=60)
    assert read_token(key, token, kind="customer") == 7
    with pytest.raises(NotAuthenticated):
        read_token(key, token, kind="agent")
    with pytest.raises(NotAuthenticated):
        read_token(b"other" * 8, token, kind="customer")
    with pytest.raises(NotAuthenticated):
        read_token(key, issue_token(key, kind="customer", subject=7, ttl_s=-1), kind="customer")
