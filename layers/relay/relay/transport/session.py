"""The container's one pooled requests.Session; urllib3 keeps its TCP connections for warm invocations."""

from __future__ import annotations

import requests
from requests.adapters import HTTPAdapter

_session: requests.Session | None = None


def shared_session() -> requests.Session:
    """Built once per container, on first use."""
    global _session
    if _session is None:
        session = requests.Session()
        # Retries are RetryPolicy's; redirects are never followed (every request says allow_redirects=False).
        # 16 per host: the RFI flow's part PUTs go up to ApsPartConcurrency (at most 16) at once to one host.
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        _session = session
    return _session
