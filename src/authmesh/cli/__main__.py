"""``python -m authmesh.cli``: the same as the ``amesh`` console script."""

from authmesh.cli.main import main

main()
