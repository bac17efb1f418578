"""Benchmark: how long a customer waits for the bot's answer, against Rasa's own parse time.

Method: one stack on the embedded defaults (SQLite, an embedded Redis, the bundled emulator) and the real
Rasa service. For each of N messages (a fixed mix of Chinese requests), we time, back to back on the same
loop, (a) the baseline: Rasa's `/model/parse` alone, and (b) the full path: `POST /miniapp/messages`
(store, context, parse, policy, reply stored and pushed). Interleaving the two keeps machine noise out
of the ratio. Each message goes to a fresh customer after every few turns so conversations stay in the
bot state. Prints medians, p99 and the ratio.

    .venv/bin/python bench/bot_reply_latency.py [--messages 300] [--rasa-url http://127.0.0.1:5005]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from rasa_service import rasa_service

from api.embedded import ThreadedServer
from api.main import create_app
from api.settings import Settings
from api.wechat_emulator.app import create_app as create_emulator

TEXTS = [
    "你好",
    "新卡怎么激活",
    "信用卡账单多少钱",
    "怎么转账给别人",
    "额度能提高吗",
    "谢谢",
    "我想买理财",
    "今天天气怎么样",
]


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


async def run(messages: int, rasa_url: str) -> None:
    emulator = ThreadedServer(create_emulator())
    emulator_url = emulator.start()
    data_dir = Path(tempfile.mkdtemp(prefix="yt-bench-"))
    app = ThreadedServer(
        create_app(
            Settings(
                env="test",
                data_dir=data_dir,
                rasa_url=rasa_url,
                wechat_api_base=emulator_url,
                secret_key="bench-" + "k" * 32,
            )
        )
    )
    app_url = app.start()
    baseline, full = [], []
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            token = None
            for i in range(messages):
                if i % 4 == 0:
                    code = (
                        await http.post(
                            emulator_url + "/_sim/wx_login",
                            json={"appid": "wxmp0000000000dev", "person": uuid.uuid4().hex},
                        )
                    ).json()["code"]
                    token = (await http.post(app_url + "/miniapp/login", json={"code": code})).json()["token"]
                text = TEXTS[i % len(TEXTS)]
                started = time.perf_counter()
                (await http.post(rasa_url + "/model/parse", json={"text": text})).raise_for_status()
                baseline.append(time.perf_counter() - started)
                started = time.perf_counter()
                response = await http.post(
                    app_url + "/miniapp/messages",
                    headers={"Authorization": f"Bearer {token}"},
                    json={"text": text, "client_msg_id": uuid.uuid4().hex},
                )
                full.append(time.perf_counter() - started)
                response.raise_for_status()
    finally:
        app.stop()
        emulator.stop()
    ms = lambda s: s * 1000  # noqa: E731
    print(f"messages: {messages}")
    print(
        f"baseline  Rasa /model/parse      median {ms(statistics.median(baseline)):6.1f} ms"
        f"   p99 {ms(p99(baseline)):6.1f} ms"
    )
    print(
        f"full path POST /miniapp/messages median {ms(statistics.median(full)):6.1f} ms   p99 {ms(p99(full)):6.1f} ms"
    )
    print(
        f"ratio full/baseline: median {statistics.median(full) / statistics.median(baseline):.2f}x, "
        f"p99 {p99(full) / p99(baseline):.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--rasa-url")
    args = parser.parse_args()
    with rasa_service(args.rasa_url) as rasa_url:
        asyncio.run(run(args.messages, rasa_url))


if __name__ == "__main__":
    main()
