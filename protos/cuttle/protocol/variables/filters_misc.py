"""UriPart and the Version* filters."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import unquote, urlsplit

_DEFAULT_PORTS = {
    "http": 80,
    "https": 443,
    "ftp": 21,
    "ws": 80,
    "wss": 443,
    "gopher": 70,
    "nntp": 119,
    "news": 119,
    "telnet": 23,
    "ldap": 389,
    "mailto": 25,
}
_ABSOLUTE = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_RELATIVE_ONLY = "This operation is not supported for a relative URI."


def _host_type(host: str) -> str:
    if not host:
        return "Basic"
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return "Dns" if re.fullmatch(r"[A-Za-z0-9\-._]+", host) else "Basic"
    return "IPv4" if ip.version == 4 else "IPv6"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def uri_part(value: str | None, args: list[str]) -> str | None:
    """One component of a URI, as .NET's Uri reports it; errors come back as bracketed text."""
    if value is None:
        return None
    if not args:
        return "[UriPart error: no argument given]"
    part = args[0]
    key = part.lower()
    absolute = bool(_ABSOLUTE.match(value)) and not re.match(r"^[A-Za-z]:[\\/]", value)
    if key == "isabsoluteuri":
        return "true" if absolute else "false"
    known = {
        "absolutepath",
        "absoluteuri",
        "authority",
        "dnssafehost",
        "fragment",
        "host",
        "hostandport",
        "hostnametype",
        "isdefaultport",
        "isfile",
        "isloopback",
        "isunc",
        "path",
        "pathandquery",
        "port",
        "query",
        "scheme",
        "schemeandserver",
        "userinfo",
    }
    if key not in known:
        return f"[UriPart {part} error: argument '{part}' not supported]"
    if not absolute:
        return f"[UriPart {part} error: {_RELATIVE_ONLY}]"
    try:
        parts = urlsplit(value)
        port_explicit = parts.port
    except ValueError:
        return value  # not a URI at all: Uri.TryCreate fails and the input comes back
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if parts.netloc.startswith("[") or ":" in host:
        host = f"[{host}]"
    default = _DEFAULT_PORTS.get(scheme, -1)
    port = port_explicit if port_explicit is not None else default
    is_default = port == default
    path = parts.path or ("/" if parts.netloc else "")
    query = "?" + parts.query if parts.query or value.find("?") >= 0 else ""
    fragment = "#" + parts.fragment if parts.fragment or "#" in value else ""
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    authority = host if is_default or port == -1 else f"{host}:{port}"
    server = f"{scheme}://{authority}" if parts.netloc or scheme != "mailto" else f"{scheme}:"
    user_at = userinfo + "@" if userinfo else ""
    answers = {
        "absolutepath": path,
        "absoluteuri": f"{scheme}://{user_at}{authority}{path}{query}{fragment}",
        "authority": authority,
        "dnssafehost": host.strip("[]"),
        "fragment": fragment,
        "host": host,
        "hostandport": f"{host}:{port}" if port != -1 else host,
        "hostnametype": _host_type(host),
        "isdefaultport": "true" if is_default else "false",
        "isfile": "true" if scheme == "file" else "false",
        "isloopback": "true" if _is_loopback(host) else "false",
        "isunc": "true" if scheme == "file" and bool(host) else "false",
        "path": unquote(path),
        "pathandquery": path + query,
        "port": str(port),
        "query": query,
        "scheme": scheme,
        "schemeandserver": server,
        "userinfo": userinfo,
    }
    return answers[key]


_VERSION = re.compile(
    r"^\s*(?:\s*(?P<prefix>v|V)?\s*(?P<major>\d+\b)\s*"
    r"(?:\.\s*(?P<minor>\d+\b)\s*)?(?:\.\s*(?P<patch>\d+\b)\s*)?"
    r"(?:\.\s*(?P<revision>\d+\b)\s*)?)?"
    r"(?:[.\-_\\])?(?P<prerelease>(?P<preprefix>[A-Za-z0-9]*?)"
    r"(?:[.\-_\\](?P<precounter>[A-Za-z0-9.\-_\\]*?)?)?)?"
    r"(?:\+(?P<meta>[A-Za-z0-9_\-.\\+]*?))?\s*$"
)
_INT32_MAX = 2**31 - 1


def _version(value: str | None, args: list[str], field: str) -> str | None:
    if value is None or args or not value.strip():
        return None
    m = _VERSION.match(value)
    if m is None:
        return None
    if field in ("major", "minor", "patch", "revision"):
        text = m.group(field)
        if text is None:
            return "0"
        number = int(text)
        return None if number > _INT32_MAX else str(number)
    return m.group(field) or ""


def version_major(value: str | None, args: list[str]) -> str | None:
    """Major version number."""
    return _version(value, args, "major")


def version_minor(value: str | None, args: list[str]) -> str | None:
    """Minor version number."""
    return _version(value, args, "minor")


def version_patch(value: str | None, args: list[str]) -> str | None:
    """Patch version number."""
    return _version(value, args, "patch")


def version_revision(value: str | None, args: list[str]) -> str | None:
    """Revision version number."""
    return _version(value, args, "revision")


def version_prerelease(value: str | None, args: list[str]) -> str | None:
    """Whole prerelease tag."""
    return _version(value, args, "prerelease")


def version_prerelease_prefix(value: str | None, args: list[str]) -> str | None:
    """Leading letter-and-digit run of the prerelease."""
    return _version(value, args, "preprefix")


def version_prerelease_counter(value: str | None, args: list[str]) -> str | None:
    """Prerelease text after its first separator."""
    return _version(value, args, "precounter")


def version_metadata(value: str | None, args: list[str]) -> str | None:
    """Build metadata after `+`."""
    return _version(value, args, "meta")
