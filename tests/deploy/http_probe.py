"""One HTTP GET to a health or metrics endpoint, over TLS too, that never raises."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.request
from typing import Any

__all__ = ["get_health"]


def get_health(url: str, tls: ssl.SSLContext | None = None) -> tuple[int, Any]:
    """Status code and parsed JSON body of one GET (status 0 when nothing answers)."""
    try:
        with urllib.request.urlopen(url, timeout=2, context=tls) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, None
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, None
