"""Whether downloads may be tried: every download the package makes (diffusion prior, CLIP, FID
Inception weights) asks here first. Offline means HF_HUB_OFFLINE or L2VSD_OFFLINE is set, or the
Hugging Face hub cannot be reached within a couple of seconds (checked once per process), so an
offline machine gets one clear line at once instead of a minute of retries."""
from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "L2VSD_OFFLINE")
PROBE_SECONDS = 2.0


def offline_variables_set() -> list[str]:
    return [name for name in OFFLINE_VARIABLES
            if os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no", "off")]


@functools.lru_cache(maxsize=None)
def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=PROBE_SECONDS):
            return True
    except OSError:
        return False


def hub_reachable() -> bool:
    """A TCP connection to the hub's endpoint opens. Behind a proxy we cannot tell cheaply, so
    we say yes and let the download try."""
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    return _reachable(endpoint.hostname or "huggingface.co", endpoint.port or 443)


def why_offline() -> str | None:
    """None when downloads may be tried, else the reason, for error messages."""
    names = offline_variables_set()
    if names:
        return f"{', '.join(names)} set"
    if not hub_reachable():
        return "the Hugging Face hub is not reachable"
    return None
