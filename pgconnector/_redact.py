"""Keep passwords out of reprs, log records and error messages.

:func:`redact` is deliberately generous: masking a little too much of a message is harmless,
printing one byte of a password is not.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextlib import suppress
from urllib.parse import quote

__all__ = ["MASK", "redact", "redact_dsn", "mask_secrets"]

MASK = "***"

# The userinfo password runs to the *last* "@" of the whitespace-free run, so that a password
# with an unencoded "@" or "/" (which breaks URI parsing) is still masked in full. Masking a
# path that contains "@" as well is the acceptable price.
_URI_PASSWORD = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/?#@\[\]]*):(?P<secret>\S*)@"
)
_SCHEME = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.\-]*://")
# libpq keywords are identifiers: text after a password that looks like "keyword=" starts the
# next parameter; anything else is taken to be more of the password. The DSN parser refuses
# other keywords, so that the two agree.
_KEYWORD = r"[A-Za-z_][A-Za-z0-9_]*"


def _query_password(value_char: str) -> re.Pattern[str]:
    """Match ``?password=…`` / ``&sslpassword=…`` in a URI query, stray "&"s included."""
    return re.compile(
        r"(?P<head>[?&](?:ssl)?password=)"
        rf"(?P<secret>{value_char}*(?:&(?!{_KEYWORD}=){value_char}*)*)",
        re.I,
    )


_QUERY_PASSWORD = _query_password(r"[^&\s]")
# Inside one whole DSN whitespace cannot end the URI.
_DSN_QUERY_PASSWORD = _query_password(r"[^&]")

# libpq key=value. A value is a run of quoted chunks (which may hold spaces and backslash
# escapes; an unterminated one runs to the end, as libpq reads it), escaped characters and
# plain characters. It also swallows the following words up to the next "keyword=", in case
# it was a password with an unquoted space or a stray quote. PGPASSWORD=… (as in a shell
# line) is masked too; the look-behind keeps the URI query form (handled above) and other
# longer names out.
_KV_WORD = r"(?:'(?:\\.|[^'\\])*(?:'|\\?\Z)|\\.|\\\Z|[^\s'\\])"


def _kv_password(gap: str) -> re.Pattern[str]:
    return re.compile(
        r"(?P<head>(?<![\w?&])(?:ssl|pg)?password\s*=\s*)"
        rf"(?P<secret>{_KV_WORD}*(?:{gap}(?!{_KEYWORD}\s*=){_KV_WORD}+)*)",
        re.I | re.S,
    )


_KV_PASSWORD = _kv_password(r"[ \t]+")
# Inside one whole DSN any whitespace separates words; in free text, only the same line's.
_DSN_KV_PASSWORD = _kv_password(r"\s+")


def _mask_kv(match: re.Match[str]) -> str:
    quoted = match.group("secret").startswith("'")
    return match.group("head") + (f"'{MASK}'" if quoted else MASK)


def _spellings(secret: str) -> set[str]:
    """How a secret may appear in text: as is, percent-encoded, or libpq-quoted."""
    forms = {secret}
    with suppress(UnicodeEncodeError):  # a lone surrogate cannot be percent-encoded
        forms.add(quote(secret, safe=""))
    forms.add(secret.replace("\\", "\\\\").replace("'", "\\'"))
    return {form for form in forms if form}


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Return *text* with every password replaced by ``***``.

    Masks the password of any ``scheme://user:password@host`` URI; ``password=`` and
    ``sslpassword=`` in URI query strings and libpq ``key=value`` strings (quoted or not);
    ``PGPASSWORD=``; and every literal occurrence of the given *secrets* (also in their
    percent-encoded and libpq-quoted spellings). Empty and ``None`` secrets are ignored.
    Never raises.
    """
    # Known secrets first: a pattern that stopped short of a secret's end would otherwise
    # leave only its tail, which then no longer matches.
    text = mask_secrets(text, secrets)
    text = _URI_PASSWORD.sub(lambda m: f"{m.group('head')}:{MASK}@", text)
    text = _QUERY_PASSWORD.sub(lambda m: m.group("head") + MASK, text)
    return _KV_PASSWORD.sub(_mask_kv, text)


def mask_secrets(text: str, secrets: Iterable[str | None]) -> str:
    """Replace only the literal occurrences of *secrets* (in every spelling) by ``***``.

    For text whose structure is known not to hold other passwords, such as a repr() built
    from already-redacted parts, where :func:`redact`'s patterns would misfire.
    """
    forms: set[str] = set()
    for secret in secrets:
        if isinstance(secret, str) and secret:
            forms |= _spellings(secret)
    # Longest first, so that a secret containing another is masked as a whole.
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, MASK)
    return text


def redact_dsn(dsn: str, *, secrets: Iterable[str | None] = ()) -> str:
    """Return the DSN (URI or ``key=value`` form) with its password replaced by ``***``.

    Works on malformed DSNs too. Since the whole string is one DSN, a URI's userinfo is taken
    to run to its last "@", spaces included; when the DSN parses, the password it holds is
    also masked wherever else it occurs, as are any extra *secrets*.
    """
    from ._dsn import dsn_secrets  # late: _dsn is the heavier module and needs nothing here

    secrets = [*dsn_secrets(dsn), *secrets]
    scheme = _SCHEME.match(dsn)
    if scheme is not None:
        userinfo, at, rest = dsn[scheme.end() :].rpartition("@")
        user, colon, _ = userinfo.partition(":")
        if at and colon:
            dsn = f"{dsn[: scheme.end()]}{user}:{MASK}@{rest}"
        dsn = _DSN_QUERY_PASSWORD.sub(lambda m: m.group("head") + MASK, dsn)
    else:
        dsn = _DSN_KV_PASSWORD.sub(_mask_kv, dsn)
    return redact(dsn, secrets)
