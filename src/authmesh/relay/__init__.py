"""authmesh relay: the rendezvous server for pairing, bootstrap and shell routing.

Programmatic use::

    relay = create_relay_server(port=0)
    async with relay:
        print(relay.url)  # ws://127.0.0.1:<port>/ws

Command line: ``amesh-relay`` or ``python -m authmesh.relay`` (settings by env or flags).
"""

from authmesh.relay._config import ConfigError, RelayConfig
from authmesh.relay._protocol import Close, RelayCore, Send
from authmesh.relay._server import RelayServer, create_relay_server, run

__all__ = [
    "Close",
    "ConfigError",
    "RelayConfig",
    "RelayCore",
    "RelayServer",
    "Send",
    "create_relay_server",
    "run",
]
