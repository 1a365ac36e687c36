"""Helpers the tests share: real processes (relay, redis-server, nginx), vector files, and the
tools each test directory builds on. Fixtures stay in the ``conftest.py`` modules."""
