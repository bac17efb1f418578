"""The WXBizMsgCrypt scheme against WeChat's published test vectors, and against wechatpy's implementation.

Vectors: Tencent's own sample code for the official-account message encryption (WXBizMsgCrypt, "Copyright (c)
1998-2014 Tencent Inc."), linked from the official docs page "消息加解密说明"
(https://developers.weixin.qq.com/doc/offiaccount/Message_Management/Message_encryption_and_decryption_instructions.html):
- the Python sample's `Sample.py` decrypt test (token "spamtest", appid "wx2c2769f8efd9abc2", msg_sign
  5d197aaf..., the Encrypt below);
- the Java sample's `WXBizMsgCryptTest.java` encrypt vectors (token "pamtest", appid "wxb11529c136998cb6",
  random "aaaabbbbccccdddd": "我是中文abcd123" and a video reply, to a fixed ciphertext).
"""

from __future__ import annotations

import pytest
from wechatpy.crypto import PrpCrypto

from api.channels.wechat_oa.crypto import (
    CryptoError,
    Keyring,
    MessageCipher,
    check_signature,
    decode_aes_key,
    signature,
)
from api.channels.wechat_oa.xml import parse_fields
from tests.channels.wechat_oa.conftest import KEY, OLD_KEY, encrypt_raw, frame

SAMPLE_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"

# Python sample (Sample.py), the decrypt test.
PY_TOKEN, PY_APPID, PY_TIMESTAMP, PY_NONCE = "spamtest", "wx2c2769f8efd9abc2", "1409735669", "1320562132"
PY_MSG_SIGN = "5d197aaffba7e9b25a30732f161a50dee96bd5fa"
PY_ENCRYPT = (
    "hyzAe4OzmOMbd6TvGdIOO6uBmdJoD0Fk53REIHvxYtJlE2B655HuD0m8KUePWB3+LrPXo87wzQ1QLvbeUgmBM4x6F8PGHQHFVAFmOD2LdJF9Fr"
    "XpbUAh0B5GIItb52sn896wVsMSHGuPE328HnRGBcrS7C41IzDWyWNlZkyyXwon8T332jisa+h6tEDYsVticbSnyU8dKOIbgU6ux5VTjg3yt+WG"
    "zjlpKn6NPhRjpA912xMezR4kw6KWwMrCVKSVCZciVGCgavjIQ6X8tCOp3yZbGpy0VxpAe+77TszTfRd5RJSVO/HTnifJpXgCSUdUue1v6h0EIB"
    "YYI1BD1DlD+C0CR8e6OewpusjZ4uBl9FyJvnhvQl+q5rv1ixrcpCumEPo5MJSgM9ehVsNPfUM669WuMyVWQLCzpu9GhglF2PE="
)

# Java sample (WXBizMsgCryptTest.java), the encrypt tests.
JAVA_APPID, JAVA_RANDOM = "wxb11529c136998cb6", b"aaaabbbbccccdddd"
JAVA_REPLY = "我是中文abcd123"
JAVA_ENCRYPTED = "jn1L23DB+6ELqJ+6bruv21Y6MD7KeIfP82D6gU39rmkgczbWwt5+3bnyg5K55bgVtVzd832WzZGMhkP72vVOfg=="
JAVA_REPLY_2 = (
    "<xml><ToUserName><![CDATA[oia2Tj我是中文jewbmiOUlr6X-1crbLOvLw]]></ToUserName><FromUserName><![CDATA["
    "gh_7f083739789a]]></FromUserName><CreateTime>1407743423</CreateTime><MsgType><![CDATA[video]]></MsgType>"
    "<Video><MediaId><![CDATA[eYJ1MbwPRJtOvIEabaxHs7TX2D-HV71s79GUxqdUkjm6Gs2Ed1KF3ulAOA9H1xG0]]></MediaId><Title>"
    "<![CDATA[testCallBackReplyVideo]]></Title><Description><![CDATA[testCallBackReplyVideo]]></Description></Video>"
    "</xml>"
)
JAVA_ENCRYPTED_2 = (
    "jn1L23DB+6ELqJ+6bruv23M2GmYfkv0xBh2h+XTBOKVKcgDFHle6gqcZ1cZrk3e1qjPQ1F4RsLWzQRG9udbKWesxlkupqcEcW7ZQweImX9+wL"
    "Ma0GaUzpkycA8+IamDBxn5loLgZpnS7fVAbExOkK5DYHBmv5tptA9tklE/fTIILHR8HLXa5nQvFb3tYPKAlHF3rtTeayNf0QuM+UW/wM9enGID"
    "IJHF7CLHiDNAYxr+r+OrJCmPQyTy8cVWlu9iSvOHPT/77bZqJucQHQ04sq7KZI27OcqpQNSto2OdHCoTccjggX5Z9Mma0nMJBU+jLKJ38YB1f"
    "BIz+vBzsYjrTmFQ44YfeEuZ+xRTQwr92vhA9OxchWVINGC50qE/6lmkwWTwGX9wtQpsJKhP+oS7rvTY8+VdzETdfakjkwQ5/Xka042OlUb1/sl"
    "Two4RscuQ+RdxSGvDahxAJ6+EAjLt9d8igHngxIbf6YyqqROxuxqIeIch3CssH/LqRs+iAcILvApYZckqmA7FNERspKA5f8GoJ9sv8xmGvZ9Yr"
    "f57cExWtnX8aCMMaBropU/1k+hKP5LVdzbWCG0hGwx/dQudYR/eXp3P0XxjlFiy+9DMlaFExWUZQDajPkdPrEeOwofJb"
)


def test_published_decrypt_vector():
    assert signature(PY_TOKEN, PY_TIMESTAMP, PY_NONCE, PY_ENCRYPT) == PY_MSG_SIGN
    assert check_signature(PY_TOKEN, PY_MSG_SIGN, PY_TIMESTAMP, PY_NONCE, PY_ENCRYPT)
    fields = parse_fields(MessageCipher(SAMPLE_KEY, PY_APPID).decrypt(PY_ENCRYPT))
    assert fields == {
        "ToUserName": "gh_10f6c3c3ac5a",
        "FromUserName": "oyORnuP8q7ou2gfYjqLzSIWZf0rs",
        "CreateTime": "1409735668",
        "MsgType": "text",
        "Content": "abcdteT",
        "MsgId": "6054768590064713728",
    }


@pytest.mark.parametrize(("plain", "expected"), [(JAVA_REPLY, JAVA_ENCRYPTED), (JAVA_REPLY_2, JAVA_ENCRYPTED_2)])
def test_published_encrypt_vectors(plain, expected):
    cipher = MessageCipher(SAMPLE_KEY, JAVA_APPID)
    assert cipher.encrypt(plain, random_prefix=JAVA_RANDOM) == expected
    assert cipher.decrypt(expected) == plain


def test_round_trip_with_wechatpy_an_independent_implementation():
    ours = MessageCipher(KEY, "wxoa0000000000dev")
    theirs = PrpCrypto(decode_aes_key(KEY))
    message = "<xml><Content><![CDATA[转人工 ]]]]><![CDATA[> 🙂]]></Content></xml>"
    assert theirs.decrypt(ours.encrypt(message), "wxoa0000000000dev") == message
    assert ours.decrypt(theirs.encrypt(message, "wxoa0000000000dev").decode()) == message


def test_signatures_are_sorted_sha1_and_compared_exactly():
    assert signature("token", "2", "1") == signature("token", "1", "2")
    good = signature("token", "1409735669", "1320562132")
    assert check_signature("token", good, "1409735669", "1320562132")
    assert check_signature("token", good.upper(), "1409735669", "1320562132")  # hex case doesn't matter
    assert not check_signature("token", good[:-1] + "0", "1409735669", "1320562132")
    assert not check_signature("token", "", "1409735669", "1320562132")
    assert not check_signature("other", good, "1409735669", "1320562132")


@pytest.mark.parametrize(
    ("encrypted", "code"),
    [
        ("%%%", "oa_bad_base64"),
        ("QUJD", "oa_bad_ciphertext"),  # 3 bytes: not whole AES blocks
        (encrypt_raw(KEY, b"x" * 31 + b"\x00", pad=False), "oa_bad_padding"),
        (encrypt_raw(KEY, b"x" * 10), "oa_bad_ciphertext"),  # shorter than random + length
        (encrypt_raw(KEY, b"r" * 16 + b"\x00\x00\x10\x00" + b"short"), "oa_bad_ciphertext"),  # declared length lies
        (encrypt_raw(KEY, frame("<xml/>", appid="wxanother")), "oa_wrong_appid"),
        (encrypt_raw(KEY, b"r" * 16 + b"\x00\x00\x00\x02" + b"\xff\xfe" + b"wxoa0000000000dev"), "oa_bad_ciphertext"),
    ],
)
def test_decrypt_errors_name_what_is_wrong(encrypted, code):
    with pytest.raises(CryptoError) as error:
        MessageCipher(KEY, "wxoa0000000000dev").decrypt(encrypted)
    assert error.value.code == code and error.value.message


def test_keyring_falls_back_to_the_previous_key_and_says_which_key_worked():
    keyring = Keyring.of("wxoa0000000000dev", KEY, OLD_KEY)
    new = MessageCipher(KEY, "wxoa0000000000dev").encrypt("<xml/>")
    old = MessageCipher(OLD_KEY, "wxoa0000000000dev").encrypt("<xml/>")
    assert keyring.decrypt(new)[1] is keyring.current
    assert keyring.decrypt(old)[1] is keyring.previous
    with pytest.raises(CryptoError):
        Keyring.of("wxoa0000000000dev", KEY).decrypt(old)


@pytest.mark.parametrize("key", ["short", "a" * 44, "!" * 43])
def test_a_malformed_encoding_aes_key_fails_at_start(key):
    with pytest.raises(ValueError):
        Keyring.of("wxoa0000000000dev", key)
