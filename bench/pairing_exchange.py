"""CPU time of one interactive pairing, both sides, in memory: v2 (the former default) and v3.

No relay and no sockets: the protocol objects exchange frames directly, so the figure is the
cryptography and bookkeeping each pairing costs the two machines together (the relay's share
is in ``relay_pairing.py``). Run: ``.venv/bin/python bench/pairing_exchange.py [rounds]``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from authmesh.core._keys import PrivateKey
from authmesh.pairing import PairingCode
from authmesh.pairing._v2 import V2Controller, V2Target
from authmesh.pairing._v3 import V3Controller, V3Target

CONTROLLER_KEY, TARGET_KEY = PrivateKey.generate(), PrivateKey.generate()


def pair_v2() -> None:
    controller = V2Controller(CONTROLLER_KEY, "laptop", "482913")
    target = V2Target(TARGET_KEY, "server", "482913")
    reveal, identity = controller.on_target_key(target.on_commit(controller.commit_frame()))
    target.on_reveal(reveal)
    _, target_identity = target.on_controller_identity(identity)
    controller.on_target_identity(target_identity)
    controller.on_confirm(target.confirm_frame(True))
    target.on_receipt(controller.receipt_frame())


def pair_v3() -> None:
    code = PairingCode.generate()
    controller = V3Controller(CONTROLLER_KEY, "laptop", code)
    target = V3Target(TARGET_KEY, "server", code)
    controller_pake, target_pake = controller.start(), target.start()
    [controller_identity] = controller.receive(target_pake)
    [target_identity] = target.receive(controller_pake)
    controller.receive(target_identity)
    target.receive(controller_identity)
    target_finish, controller_finish = target.accept(), controller.accept()
    controller.receive(target_finish)
    target.receive(controller_finish)
    assert controller.finished and target.finished


def cpu_ms_per_round(exchange: Callable[[], None], rounds: int) -> float:
    exchange()  # warm caches and imports
    started = time.process_time()
    for _ in range(rounds):
        exchange()
    return (time.process_time() - started) * 1000 / rounds


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    v2 = cpu_ms_per_round(pair_v2, rounds)
    v3 = cpu_ms_per_round(pair_v3, rounds)
    print(f"rounds: {rounds}")
    print(f"v2 (former default): {v2:.2f} ms CPU per pairing, both sides")
    print(f"v3 (default):        {v3:.2f} ms CPU per pairing, both sides")


if __name__ == "__main__":
    main()
