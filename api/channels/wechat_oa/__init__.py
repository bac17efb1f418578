"""The WeChat official account (公众号) channel: the `/wechat/oa` push endpoint and outbound delivery.

- `crypto.py`, `xml.py`, `envelope.py`: signatures, AES, hardened XML (no I/O);
- `models.py`, `service.py`: the SQL side (identities, messages kept pending);
- `quota.py`: the customer-service windows, tracked in Redis;
- `outbound.py`: the channel's sender (passive reply, custom-send, pending, typing);
- `flows.py`: one push from WeChat, under the 5-second rule; `router.py`: the thin HTTP layer.
"""
