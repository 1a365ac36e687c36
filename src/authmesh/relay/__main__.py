"""``python -m authmesh.relay``: same as the ``amesh-relay`` command."""

import sys

from authmesh.relay.cli import main

sys.exit(main())
