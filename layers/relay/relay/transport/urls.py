"""URL origins, parsed once with the parser that will send the request, so a check and a send never disagree."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from relay.errors import UnsafeLocationError

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class Origin:
    """Scheme, host and effective port: what decides where the bytes and the token go."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"


def _refuse(url: str, why: str) -> UnsafeLocationError:
    # Name the host-ish part only: a query string may carry a signature, user information a password.
    shown = url.split("?", 1)[0][:200]
    scheme, sep, rest = shown.partition("//")
    if sep and "@" in rest.split("/", 1)[0]:
        shown = f"{scheme}//[user information]@{rest.split('@', 1)[1]}"
    return UnsafeLocationError(f"refusing URL {shown!r}: {why}")


def origin_of(url: str) -> Origin:
    """The origin requests would connect to, or UnsafeLocationError when anything about it is ambiguous."""
    if "\\" in url:
        raise _refuse(url, "it holds a backslash")
    if any(ord(ch) <= 0x20 or ord(ch) == 0x7F for ch in url):
        raise _refuse(url, "it holds whitespace or a control character")
    try:
        parsed = parse_url(url)  # what requests' PreparedRequest.prepare_url uses
        split = urlsplit(url)
        split_port = split.port
    except (LocationParseError, ValueError) as exc:
        raise _refuse(url, f"it does not parse ({type(exc).__name__})") from None
    scheme = parsed.scheme or ""
    if scheme not in DEFAULT_PORTS or not url.startswith(f"{scheme}://"):
        raise _refuse(url, "only lower-case http and https URLs are allowed")
    if parsed.auth is not None or "@" in split.netloc:
        raise _refuse(url, "it carries user information (user:password@)")
    host = parsed.host or ""
    raw_host = split.netloc.rsplit(":", 1)[0] if not split.netloc.endswith("]") else split.netloc
    if not host or not raw_host.isascii() or "%" in raw_host or host.endswith("."):
        raise _refuse(url, "its host is empty, percent-encoded, non-ASCII or ends with a dot")
    if (split.hostname or "") != host.lower().strip("[]") or split_port != parsed.port:
        raise _refuse(url, "URL parsers read its host or port differently")
    port = parsed.port if parsed.port is not None else DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise _refuse(url, f"port {port} is out of range")
    return Origin(scheme, host.lower(), port)


def trusted_origins(base_url: str, extra_hosts: Iterable[str], *, local: bool | None = None) -> frozenset[Origin]:
    """The base URL's origin, plus each `host[:port]` (the base's scheme) or `scheme://host[:port]` entry."""
    base = origin_of(base_url)
    local = base.scheme == "http" if local is None else local
    origins = {base}
    for entry in extra_hosts:
        origin = origin_of(entry if "://" in entry else f"{base.scheme}://{entry}")
        if origin.scheme != "https" and not local:
            # The token would travel in clear text: only a local (http) deployment may trust http origins.
            raise UnsafeLocationError(f"refusing to trust {origin} beside the https API base {base}")
        origins.add(origin)
    return frozenset(origins)


def is_absolute(path_or_url: str) -> bool:
    """Anything with a scheme or a network location is a URL, not a path on the API host."""
    head = path_or_url.split("/", 1)[0]
    return ":" in head or path_or_url.startswith(("//", "\\"))
