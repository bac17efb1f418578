"""NAT: customers on mobile networks often can't reach the media server directly. A real coturn
(`turnserver`, Debian's `coturn`; `make test` installs it) on loopback, the deployment configured with its
shared secret, and both parties forced to relay-only ICE with the configuration the API hands them."""

from __future__ import annotations

import random
import secrets
import shutil
import socket
import struct
import subprocess
import time

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCSessionDescription
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from tests.video.clients import MediaParty, looks_like
from tests.video.support import (
    escalated_customer,
    request_call,
    video_agent,
    wait_for_call,
    wait_for_recordings,
    wait_until,
)

SMALL = dict(width=320, height=240, fps=15)


@pytest.fixture
def coturn(tmp_path):
    """turnserver on 127.0.0.1 with TURN REST credentials (`use-auth-secret`); yields (url, secret)."""
    executable = shutil.which("turnserver")
    if executable is None:
        pytest.fail("coturn is not installed: `make test` installs it (make turn)")
    port = random.randint(20000, 29999)
    relay_low = random.randint(40000, 59000)
    secret = secrets.token_hex(16)
    config = tmp_path / "turnserver.conf"
    config.write_text(
        "\n".join(
            [
                "listening-ip=127.0.0.1",
                "relay-ip=127.0.0.1",
                f"listening-port={port}",
                f"min-port={relay_low}",
                f"max-port={relay_low + 200}",
                "use-auth-secret",
                f"static-auth-secret={secret}",
                "realm=yunting.test",
                "fingerprint",
                "allow-loopback-peers",  # the test's media worker is on this host
                "no-cli",
                "no-tls",
                "no-dtls",
                "simple-log",
                f"log-file={tmp_path / 'turn.log'}",
                f"pidfile={tmp_path / 'turn.pid'}",
                "",
            ]
        )
    )
    config.chmod(0o600)
    log = (tmp_path / "turn.out").open("w")
    process = subprocess.Popen([executable, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while not stun_answers(port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"turnserver did not open its listener: {_turn_log(tmp_path)[-2000:]}")
        time.sleep(0.1)
    try:
        yield f"turn:127.0.0.1:{port}?transport=udp", secret, tmp_path
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def stun_answers(port: int) -> bool:
    """A STUN binding request (RFC 5389) to 127.0.0.1:port: True once the server answers it."""
    request = struct.pack("!HHI12s", 0x0001, 0, 0x2112A442, secrets.token_bytes(12))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.settimeout(0.3)
        probe.sendto(request, ("127.0.0.1", port))
        try:
            return probe.recv(2048)[8:20] == request[8:20]
        except OSError:
            return False


def _turn_log(directory) -> str:
    return "".join(
        path.read_text(errors="replace") for name in ("turn.log", "turn.out") if (path := directory / name).exists()
    )


def relay_only(ice: dict) -> RTCConfiguration:
    """The API's ICE configuration for a party as aiortc takes it."""
    assert ice["ice_transport_policy"] == "relay"
    servers = [RTCIceServer(**server) for server in ice["ice_servers"]]
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=RTCIceTransportPolicy.RELAY)


def candidate_types(sdp: str) -> set[str]:
    return {line.split()[7] for line in sdp.splitlines() if line.startswith("a=candidate:")}


async def test_a_call_whose_parties_can_only_use_turn_connects_and_records_through_coturn(
    video_stack, emulator, coturn
):
    turn_url, secret, _ = coturn
    stack = video_stack(video_turn_urls=turn_url, video_turn_secret=secret, video_client_ice_policy="relay")
    agent = await video_agent(stack)
    customer, conversation_id = await escalated_customer(stack, emulator)
    call = await request_call(customer, conversation_id)

    ice = (await customer.http.get(f"/video/calls/{call['id']}/ice")).json()
    turn = ice["ice_servers"][-1]
    assert turn["urls"] == [turn_url] and turn["username"].endswith(f":call{call['id']}-customer")
    assert int(turn["username"].split(":")[0]) > time.time()  # short-lived, minted for this call
    customer_media = MediaParty("customer", **SMALL, configuration=relay_only(ice))
    offer = await customer_media.offer()
    assert candidate_types(offer["sdp"]) == {"relay"}  # nothing but coturn's relayed address
    response = await customer.http.post(f"/video/calls/{call['id']}/offer", json=offer)
    assert response.status_code == 200, response.text
    await customer_media.pc.setRemoteDescription(RTCSessionDescription(sdp=response.json()["sdp"], type="answer"))
    await wait_for_call(agent.http, call["id"], "ringing")
    assert (await agent.http.post(f"/video/calls/{call['id']}/accept")).status_code == 200
    agent_ice = (await agent.http.get(f"/video/calls/{call['id']}/ice")).json()
    agent_media = MediaParty("agent", **SMALL, configuration=relay_only(agent_ice))
    assert (await agent_media.negotiate(agent.http, call["id"])).status_code == 200
    await wait_for_call(agent.http, call["id"], "connected", timeout=20)
    await wait_until(
        lambda: len(agent_media.received) > 10 and len(customer_media.received) > 10, 20, "frames through TURN"
    )
    assert looks_like(agent_media.received[-1][0], "customer") and looks_like(customer_media.received[-1][0], "agent")

    assert (await customer.http.post(f"/video/calls/{call['id']}/hangup")).json()["state"] == "ended"
    recordings = await wait_for_recordings(agent, call["id"])
    assert all(r["status"] == "complete" and r["has_video"] for r in recordings), recordings
    for media in (customer_media, agent_media):
        await media.close()
    await customer.aclose()
    await agent.aclose()
