"""Call a protected service as this machine's identity.

    AUTH_MESH_DIR=~/.amesh python examples/client.py http://127.0.0.1:8000/orders

The key is unlocked once; every request (and every redirect hop) is signed.
"""

from __future__ import annotations

import argparse
import sys

from authmesh.sdk import Client, SigningError
from authmesh.store import StoreError


def main() -> int:
    parser = argparse.ArgumentParser(description="POST a signed order to an authmesh service.")
    parser.add_argument("url")
    parser.add_argument("--peer", help="device id or name of the service, to pick v1/v2")
    args = parser.parse_args()
    try:
        with Client(peer=args.peer, timeout=10) as client:
            response = client.post(args.url, json={"item": "Standing Desk", "amount": 59900})
    except (StoreError, SigningError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(response.status_code, response.text)
    return 0 if response.is_success else 1


if __name__ == "__main__":
    sys.exit(main())
