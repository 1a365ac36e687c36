"""Our controller answers a reference SDK target exactly as the recorded scripted controller.

The reference SDK's ``bootstrapIfNeeded`` init frame (pairing.json
``bootstrap_sdk_ack_cases``, first case) is sent byte for byte through a real relay process;
the ack our ``provision`` produces must arrive as the frame the SDK accepted in that run.
"""

from __future__ import annotations

import asyncio
import json

from websockets.asyncio.client import connect

from authmesh.core._bootstrap_token import decode_token
from authmesh.core._keys import PrivateKey
from authmesh.pairing import provision
from authmesh.pairing._bootstrap import IssuedToken
from tests.support.relayproc import RelayProcess
from tests.support.vectorfiles import section

STEP = 10.0


async def test_reference_sdk_target_gets_the_recorded_ack(fresh_relay: RelayProcess) -> None:
    case = section("pairing.json", "bootstrap_sdk_ack_cases.cases")[0]
    assert case["outcome"] == "resolved"
    init_text, expected_ack = (frame["text"] for frame in case["sdk_frames"])
    init = json.loads(init_text)
    generated = section("pairing.json", "bootstrap_tokens.generated")[0]
    controller = PrivateKey.from_scalar(
        bytes.fromhex(generated["inputs"]["issuer_private_key_hex"])
    )
    decoded = decode_token(init["token"])
    payload = decoded.payload
    issued = IssuedToken(
        init["token"],
        payload["jti"],
        payload["name"],
        fresh_relay.url,
        payload["iat"],
        payload["exp"],
    )
    ready = asyncio.Event()
    watching = asyncio.create_task(
        provision(
            controller,
            issued,
            on_watching=ready.set,
            allow_legacy_target=True,  # the reference SDK sends no proof of key (W3)
            clock=lambda: payload["iat"],
        )
    )
    await asyncio.wait_for(ready.wait(), STEP)
    async with connect(fresh_relay.url, compression=None) as sdk:
        await sdk.send(init_text)
        received = await asyncio.wait_for(sdk.recv(), STEP)
    result = await asyncio.wait_for(watching, STEP)
    assert received == expected_ack
    assert result.protocol == 1
    assert result.peer_public_key_b64 == init["targetPubKey"]
