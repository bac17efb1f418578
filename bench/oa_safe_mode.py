"""Benchmark: official-account text messages in safe mode, end to end, at rising concurrency.

Method: the app runs as production runs it, in its own process (`uvicorn --factory api.main:create_app`,
access log on, as `make run` starts it), with the bundled WeChat emulator in another process (user/info and
access tokens; not on the measured path) and the real Rasa service; by default on the embedded defaults
(SQLite, an embedded Redis), or on `--database-url` / `--redis-url`. It has an EncodingAESKey, so it runs
in safe mode. The bench plays WeChat itself, with its own small signing/encryption code (independent of
the app's and of the emulator's; the emulator's `/_sim/oa/say` is NOT used, so its own HTTP hop and checks
stay out of the figures): for each message it builds the text XML, encrypts it (AES-256-CBC, WeChat's
framing), signs it (`signature` + `msg_signature`), POSTs it to `/wechat/oa`, then checks the answer's
`MsgSignature` and decrypts the passive reply. The timed span is all of that, client crypto included.

For each concurrency level (default 1, 2, 4, 8, 16 concurrent senders; each sender is a different
simulated person, whose openid comes from the emulator so the unionid lookup works), it first sends
one warm-up message per person (the first push of an openid asks user/info and creates the customer),
then runs the baseline — the same texts to Rasa's bare `/model/parse` at the same concurrency, from this
same client — and then the measured messages. Prints p50, p99 and messages/s per level, and our overhead
(our p50 − parse p50), the headline figure.

The app runs with `YUNTING_SERVER_TIMING=true`, so each answer carries a `Server-Timing` header (api/timing.py):
the app's time for the push and the part of it spent in its own `/model/parse` call. Three more columns
come from it, over the pushes the bot parsed: the app's parse (p50); what a push adds to its own parse
(end to end − the app's parse, per push, p50: client crypto, the HTTP hop to the app and all of the app's
work), and the part of that inside the app (app time − its parse). The first explains the gap between
"overhead" and "added": a parse inside the mix is slower than in the back-to-back baseline.

    .venv/bin/python bench/oa_safe_mode.py --rasa-url http://127.0.0.1:5078 [--messages 80] [--levels 1,2,4,8,16]
        [--database-url postgresql://postgres@127.0.0.1:5432/yunting_bench] [--redis-url redis://127.0.0.1:6379/14]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import secrets
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from xml.etree.ElementTree import fromstring

import httpx
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from rasa_service import rasa_service

from api.embedded import free_port
from api.launcher import wait_for
from api.paths import ROOT
from api.settings import DEV_OA_APP_ID, DEV_OA_TOKEN

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
AES_KEY = base64.b64encode(bytes(range(7, 39))).decode().rstrip("=")  # an EncodingAESKey: 43 characters
GH = "gh_yuntingbench1"
TURNS = 3  # measured messages per person (after one warm-up message)


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]


def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted([DEV_OA_TOKEN, *parts])).encode()).hexdigest()


class SafeMode:
    """WeChat's side of safe mode: encrypt + sign a push, verify + decrypt the reply."""

    def __init__(self, key: str, appid: str) -> None:
        self.key, self.appid = base64.b64decode(key + "="), appid.encode()

    def _cipher(self) -> Cipher:
        return Cipher(algorithms.AES(self.key), modes.CBC(self.key[:16]))

    def encrypt(self, text: str) -> str:
        body = text.encode()
        plain = secrets.token_bytes(16) + struct.pack(">I", len(body)) + body + self.appid
        pad = 32 - len(plain) % 32
        enc = self._cipher().encryptor()
        return base64.b64encode(enc.update(plain + bytes([pad]) * pad) + enc.finalize()).decode()

    def decrypt(self, encrypted: str) -> str:
        dec = self._cipher().decryptor()
        plain = dec.update(base64.b64decode(encrypted)) + dec.finalize()
        plain = plain[: -plain[-1]]
        (length,) = struct.unpack(">I", plain[16:20])
        assert plain[20 + length :] == self.appid, "reply encrypted for another appid"
        return plain[20 : 20 + length].decode()

    def request(self, openid: str, text: str, msg_id: int) -> tuple[dict[str, str], bytes]:
        xml = (
            f"<xml><ToUserName><![CDATA[{GH}]]></ToUserName><FromUserName><![CDATA[{openid}]]></FromUserName>"
            f"<CreateTime>{int(time.time())}</CreateTime><MsgType><![CDATA[text]]></MsgType>"
            f"<Content><![CDATA[{text}]]></Content><MsgId>{msg_id}</MsgId></xml>"
        )
        encrypt = self.encrypt(xml)
        timestamp, nonce = str(int(time.time())), str(secrets.randbelow(10**9))
        params = {
            "signature": sign(timestamp, nonce),
            "timestamp": timestamp,
            "nonce": nonce,
            "openid": openid,
            "encrypt_type": "aes",
            "msg_signature": sign(timestamp, nonce, encrypt),
        }
        body = f"<xml><ToUserName><![CDATA[{GH}]]></ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
        return params, body.encode()

    def reply(self, response: httpx.Response, openid: str) -> str | None:
        """The passive reply's text; None for ``success`` (no passive reply: late, or nothing to say)."""
        response.raise_for_status()
        return self.open_reply(response.text, openid)

    def open_reply(self, text: str, openid: str) -> str | None:
        """`reply` on the body's text."""
        if text.strip() in ("", "success"):
            return None
        outer = {c.tag: c.text or "" for c in fromstring(text)}
        assert outer["MsgSignature"] == sign(outer["TimeStamp"], outer["Nonce"], outer["Encrypt"]), "bad MsgSignature"
        inner = {c.tag: c.text or "" for c in fromstring(self.decrypt(outer["Encrypt"]))}
        assert inner["ToUserName"] == openid, inner
        return inner.get("Content", "")


def server_timing(response: httpx.Response) -> tuple[float, float]:
    """(app, nlu) seconds from the app's `Server-Timing` header."""
    spans = dict(part.strip().split(";dur=") for part in response.headers["server-timing"].split(","))
    return float(spans["app"]) / 1000, float(spans["nlu"]) / 1000


def spawn(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def stop(process: subprocess.Popen) -> None:
    """SIGTERM, so the app's shutdown stops its embedded Redis; killed if it hangs."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@contextmanager
def served_app(rasa_url: str, database_url: str | None, redis_url: str | None):
    """The emulator and the app, each in its own process as in production; yields (emulator URL, app URL)."""
    data_dir = Path(tempfile.mkdtemp(prefix="yt-bench-oa-"))
    emulator_url, app_url = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "YUNTING_ENV": "test",
        "YUNTING_DATA_DIR": str(data_dir),
        "YUNTING_RASA_URL": rasa_url,
        "YUNTING_WECHAT_API_BASE": emulator_url,
        "YUNTING_SECRET_KEY": "bench-" + "k" * 32,
        "YUNTING_OA_ENCODING_AES_KEY": AES_KEY,
        "YUNTING_SERVER_TIMING": "true",
    }
    env.update({k: v for k, v in (("YUNTING_DATABASE_URL", database_url), ("YUNTING_REDIS_URL", redis_url)) if v})
    emulator = spawn(
        [
            sys.executable,
            "-m",
            "api.wechat_emulator",
            "--port",
            emulator_url.rsplit(":", 1)[1],
            "--log-level",
            "warning",
        ],
        env,
        data_dir / "emulator.log",
    )
    app = None
    try:
        app = spawn(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "api.main:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                app_url.rsplit(":", 1)[1],
            ],
            env,
            data_dir / "app.log",
        )
        if not wait_for(app_url + "/healthz", 120, accept=lambda body: '"status":"ok"' in body.replace(" ", "")):
            raise SystemExit(f"the app did not become healthy; see {data_dir / 'app.log'}")
        print(f"  app {app_url} (log {data_dir / 'app.log'}), emulator {emulator_url}", flush=True)
        yield emulator_url, app_url
    finally:
        if app is not None:
            stop(app)
        stop(emulator)


async def run(messages: int, levels: list[int], rasa_url: str, emulator_url: str, app_url: str) -> None:
    push_url = app_url + "/wechat/oa"
    crypto = SafeMode(AES_KEY, DEV_OA_APP_ID)
    msg_ids = iter(range(int(time.time() * 1000) * 1000, 2**63))
    rows = []
    no_passive: list[str] = []  # measured pushes answered `success` (no passive reply) at the current level
    # (end to end, app, app's parse) seconds of each push, the last two from its Server-Timing header
    inside: list[tuple[float, float, float]] = []
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:

        async def openid_of(person: str) -> str:
            r = await http.get(emulator_url + "/_sim/identity", params={"appid": DEV_OA_APP_ID, "person": person})
            r.raise_for_status()
            return r.json()["openid"]

        async def push(openid: str, text: str) -> float:
            started = time.perf_counter()
            params, body = crypto.request(openid, text, next(msg_ids))
            response = await http.post(push_url, params=params, content=body, headers={"Content-Type": "text/xml"})
            content = crypto.reply(response, openid)
            elapsed = time.perf_counter() - started
            if content is None:
                no_passive.append(text)
            inside.append((elapsed, *server_timing(response)))
            return elapsed

        async def parse(text: str) -> float:
            started = time.perf_counter()
            (await http.post(rasa_url + "/model/parse", json={"text": text})).raise_for_status()
            return time.perf_counter() - started

        async def level(senders: int, call) -> tuple[list[float], float]:
            """``messages`` calls spread over ``senders`` concurrent loops; latencies and wall time."""
            latencies: list[float] = []

            async def sender(index: int) -> None:
                for turn, i in enumerate(range(index, messages, senders)):
                    latencies.append(await call(index, turn, TEXTS[i % len(TEXTS)]))

            started = time.perf_counter()
            await asyncio.gather(*(sender(k) for k in range(senders)))
            return latencies, time.perf_counter() - started

        for senders in levels:
            # Each sender moves to a fresh person every TURNS messages, so conversations stay with the
            # bot (a request routed to the agents' queue gets no bot answer while queued).
            pools = [
                [await openid_of(f"bench-{uuid.uuid4().hex[:8]}") for _ in range(-(-messages // senders // TURNS) + 1)]
                for _ in range(senders)
            ]

            async def warm(pool: list[str]) -> None:
                for openid in pool:
                    await push(openid, "你好")  # first push: user/info, a new customer (not measured)

            await asyncio.gather(*(warm(pool) for pool in pools))
            no_passive.clear()
            base, base_wall = await level(senders, lambda k, i, text: parse(text))
            inside.clear()
            ours, our_wall = await level(senders, lambda k, i, text: push(pools[k][i // TURNS], text))  # noqa: B023
            rows.append((senders, base, base_wall, ours, our_wall, list(inside), len(no_passive)))
            if no_passive:
                print(f"  level {senders}: answered `success` (no passive reply) for {sorted(set(no_passive))}")
            print(f"  level {senders} done", flush=True)

    ms = lambda s: s * 1000  # noqa: E731
    print(f"\n{messages} messages per level; safe mode (AES) end to end vs bare Rasa /model/parse\n")
    print(
        "| senders | parse p50 | parse p99 | parse msg/s | ours p50 | ours p99 | ours msg/s | overhead p50 "
        "| app's parse p50 | added to its parse, p50 | of which in the app, p50 | no passive reply |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for senders, base, base_wall, ours, our_wall, timings, missing in rows:
        bp50, op50 = statistics.median(base), statistics.median(ours)
        parsed = [(total, app, nlu) for total, app, nlu in timings if nlu]  # the pushes the bot parsed
        nlu_p50 = statistics.median(nlu for _, _, nlu in parsed)
        added_p50 = statistics.median(total - nlu for total, _, nlu in parsed)
        own_p50 = statistics.median(app - nlu for _, app, nlu in parsed)
        print(
            f"| {senders} | {ms(bp50):.1f} ms | {ms(p99(base)):.1f} ms | {len(base) / base_wall:.1f} "
            f"| {ms(op50):.1f} ms | {ms(p99(ours)):.1f} ms | {len(ours) / our_wall:.1f} "
            f"| {ms(op50 - bp50):+.1f} ms | {ms(nlu_p50):.1f} ms | {ms(added_p50):.1f} ms | {ms(own_p50):.1f} ms "
            f"| {missing} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=80, help="measured messages per concurrency level")
    parser.add_argument("--levels", default="1,2,4,8,16")
    parser.add_argument("--rasa-url")
    parser.add_argument("--database-url", help="default: SQLite in a fresh data dir")
    parser.add_argument("--redis-url", help="default: an embedded Redis started by the app")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    with rasa_service(args.rasa_url) as rasa_url, served_app(rasa_url, args.database_url, args.redis_url) as urls:
        asyncio.run(run(args.messages, levels, rasa_url, *urls))


if __name__ == "__main__":
    main()
