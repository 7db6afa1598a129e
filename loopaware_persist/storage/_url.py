"""The one URL redactor: every message, log line and ``repr`` that shows a store or
broker URL shows it through :func:`redact_url`."""

from __future__ import annotations

import re
import urllib.parse

__all__ = ("REDACTED", "redact_url")

#: What a password is replaced with.
REDACTED = "***"

# libpq's keyword/value form: password=secret or password='it''s \' quoted'.
_DSN_PASSWORD = re.compile(
    r"(?i)(?<![\w.-])(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s]*)",
)
# One query parameter: its name and its value, up to the next separator.
_QUERY_PARAM = re.compile(r"([?&;])([^=&;#]*)=([^&;#]*)")


def _is_password_name(raw: str) -> bool:
    # Percent-decoded ("pass%77ord" is "password" to libpq), any case.
    return urllib.parse.unquote(raw).strip().lower() == "password"


def _redact_query(tail: str) -> str:
    def replace(match: re.Match[str]) -> str:
        sep, name, _value = match.groups()
        if _is_password_name(name):
            return f"{sep}{name}={REDACTED}"
        return match.group()

    return _QUERY_PARAM.sub(replace, tail)


def redact_url(url: str) -> str:
    """The URL (or libpq keyword/value DSN) with every password replaced by ``***``.

    Covers the password in the userinfo (``scheme://user:secret@host``, also
    percent-encoded), in the query (``?password=``, ``&password=``, its name
    in any case or percent-encoded) and libpq's ``password=secret`` /
    ``password='se cret'`` keyword form.

    :param url: the URL as given; any object is shown through ``str()``
    :return: the text, fit for an error message or a log line
    """
    text = url if isinstance(url, str) else str(url)
    scheme, sep, rest = text.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme):
        # No authority part: a DSN such as "host=db password=x", or
        # "scheme:opaque?password=x".
        head, qmark, query = text.partition("?")
        redacted = _DSN_PASSWORD.sub(lambda m: m.group(1) + REDACTED, head)
        return redacted + (_redact_query(qmark + query) if qmark else "")
    cut = len(rest)
    for char in "/?#":
        found = rest.find(char)
        if found != -1:
            cut = min(cut, found)
    netloc, tail = rest[:cut], rest[cut:]
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        if ":" in userinfo:
            userinfo = userinfo.partition(":")[0] + ":" + REDACTED
        netloc = f"{userinfo}@{hosts}"
    return f"{scheme}{sep}{netloc}{_redact_query(tail)}"
