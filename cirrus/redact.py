"""Secrets out of what cirrus records: credentials in git remotes and in URLs anywhere in text.

Records are shared and kept for years, so userinfo, passwords and signed-URL parameters are
taken out before anything is stored; the rest of a URL is kept, so a record still says what
was read.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, unquote_plus, urlsplit, urlunsplit

_SSH_SCHEMES = {"ssh", "git+ssh", "ssh+git"}
_SCHEME_CHARS = "A-Za-z0-9+.-"
_SCHEME_NAME = rf"[A-Za-z][{_SCHEME_CHARS}]*"
# the run of scheme characters before a `://`, matched from the run's start only (matching from
# every position of a long run would make scans quadratic); its scheme starts at its first ASCII
# letter: `--https://`, `(+https://` and `é+https://` are `https://` after a `lead`, `1://` has none
_SCHEME_AT = rf"(?<![{_SCHEME_CHARS}])(?P<lead>[0-9+.-]*)(?P<scheme>(?:{_SCHEME_NAME})?)://"
_NOT_USERINFO = r"/\s@?#\"'<>,;|&="  # what ends a user name or password in running text
_SCHEME = re.compile(rf"{_SCHEME_NAME}://")
_DOS_DRIVE = re.compile(r"[A-Za-z]:[\\/]")
_SCP_USERINFO = re.compile(r"(?P<userinfo>.*)@(?P<rest>(?:\[[^\]/]*\]|[^@:/\[\]]+):.*)", re.DOTALL)
# a URL runs to whitespace or quotes, or to a `,` `;` `|` before another `://`
_URL_IN_TEXT = re.compile(rf"{_SCHEME_AT}(?:(?![,;|]\s*[{_SCHEME_CHARS}]*://)[^\s\"'<>])*")
# userinfo after any `scheme://` in a URL (`https://proxy/?url=https://u:pw@h/`), to its last `@`
# as urlsplit reads it (`u:p@ss@h`: a password may hold an `@`)
_USERINFO = re.compile(
    rf"{_SCHEME_AT}(?P<user>[^:{_NOT_USERINFO}]*)(?::[^{_NOT_USERINFO}]*)?@(?:[^{_NOT_USERINFO}]*@)*"
)
# the `precomputed://` before `gs://...`: each `scheme://` that another `scheme://` follows
_OUTER_SCHEMES = re.compile(rf"(?:{_SCHEME_NAME}://)*(?=(?:{_SCHEME_NAME})?://)")
# names of fields, parameters and query keys whose values are secrets: `Process` refuses such
# parameters, and `redact_url` blanks such query values
SECRET_NAME = re.compile(
    r"passw(or)?d|passphrase|[_-]pwd$|secret(?!ar(y|ies))|token(?![a-z])|credential"
    r"|(^|[_-])creds?$|private[_-]?key|access[_-]?key|api[_-]?key|(^|[_-])key$"
    r"|^(x-(amz|goog)-)?signature$|(^|[_-])sig$|(^|[_-])auth$|authori[sz]ation"
    r"|(^|[_-])(cookies?|jwt|bearer)$",
    re.IGNORECASE,
)
REDACTED = "REDACTED"


def strip_credentials(url: str) -> str:
    """`url` without secrets: userinfo dropped (a bare `token@` is a secret too), except that an ssh
    user name is kept (it is not a secret) while any password is dropped: in `ssh://` URLs and in
    scp-like `user:password@host:path` alike. Query and fragment of http(s) URLs are dropped as they
    can carry access tokens.
    """
    scp = _strip_scp_password(url)
    if scp is not None:
        return scp
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable remote url>"
    if parts.scheme in ("http", "https"):
        parts = parts._replace(query="", fragment="")
    return urlunsplit(_without_userinfo(parts))


def _without_userinfo(parts: SplitResult) -> SplitResult:
    """`parts` without userinfo, except an ssh user name (passwords always go)."""
    if "@" not in parts.netloc:
        return parts
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    keep_user = parts.scheme in _SSH_SCHEMES and user
    return parts._replace(netloc=f"{user}@{hostport}" if keep_user else hostport)


def _strip_scp_password(url: str) -> str | None:
    """An scp-like remote (`[user[:password]@]host:path`) without its password; None for others.

    Like git, a remote is scp-like when it has no `scheme://` and a colon comes before any slash
    (and it is no `C:\\` drive). The userinfo ends at the last `@` followed by `host:`, so a
    password holding `@`, `:` or `/` goes whole; the user name is kept, as for `ssh://`.
    """
    colon, slash = url.find(":"), url.find("/")
    if colon < 0 or 0 <= slash < colon or _SCHEME.match(url) or _DOS_DRIVE.match(url):
        return None
    match = _SCP_USERINFO.fullmatch(url)
    if match is None:
        return url
    user = match["userinfo"].split(":", 1)[0]
    return f"{user}@{match['rest']}" if user else match["rest"]


def redact_url(text: str) -> str:
    """`text` with the credentials in each `scheme://` URL in it taken out, the rest kept as given.

    Userinfo goes as `strip_credentials` drops it (an ssh user name stays), and the values of query
    or fragment parameters that carry signatures or tokens (X-Amz-Signature, X-Amz-Credential,
    X-Goog-Signature, X-Goog-Credential, Signature, sig, token, access_token, ...) become
    `REDACTED`. Every `://` counts, whatever precedes its scheme (`--https://`, `é+https://`), and
    a URL nested in another (`precomputed://https://...`) is redacted too; the scan is linear in
    the text's length. Text without a URL, or URLs without credentials, come back unchanged.
    """
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(_redact_found_url, text)


def _redact_found_url(match: re.Match) -> str:
    """A URL found in text, redacted, after what came before its scheme (`--` in `--https://`).

    Its own parts first, then the userinfo after every `://` in it: in its query or fragment
    (`?url=https://u:pw@h/`), or after a `,` that does not part URLs (`https://h,--dst=ftp://...`).
    """
    url = _redact_one_url(match.group()[len(match["lead"]) :])
    return match["lead"] + _USERINFO.sub(_drop_userinfo, url)


def _drop_userinfo(match: re.Match) -> str:
    """A `scheme://user:password@` matched by `_USERINFO` as `scheme://` (`ssh://user@` for ssh)."""
    scheme, user = match["scheme"], match["user"]
    keep = f"{user}@" if scheme.lower() in _SSH_SCHEMES and user else ""
    return f"{match['lead']}{scheme}://{keep}"


def _redact_one_url(url: str) -> str:
    """`url` (`scheme://...`) with its userinfo and secret parameters taken out; in a chain
    (`precomputed://gs://...`), those of its innermost URL, the outer schemes kept as given."""
    head = _OUTER_SCHEMES.match(url).group()  # always matches: `url` starts with a `://`
    inner = url[len(head) :]
    if inner.startswith("://"):  # no scheme: read as the scheme-relative `//host/...`
        head, inner = head + ":", inner[1:]
    return head + _redact_parts(inner)


def _redact_parts(url: str) -> str:
    """`url` without userinfo (as `strip_credentials` drops it) and with secret query and fragment
    parameters blanked; as given if it has neither, gone but for its scheme if urlsplit fails."""
    try:
        parts = urlsplit(url)
    except ValueError:  # a malformed host ("[::1") may still hold a password
        return url[: url.index("//") + 2] + "<unparseable url>"
    # `https://h,--owner=me@lab.org` in a command line: text after the URL, not userinfo
    prose = "," in parts.netloc.rpartition("@")[0]
    redacted = (parts if prose else _without_userinfo(parts))._replace(
        query=_redact_parameters(parts.query), fragment=_redact_parameters(parts.fragment)
    )
    if redacted == parts:
        return url
    scheme = len(parts.scheme)  # kept as given: urlsplit lowercases it
    return url[:scheme] + urlunsplit(redacted)[scheme:]


def _redact_parameters(query: str) -> str:
    """`a=1&sig=x` as `a=1&sig=REDACTED`: values of secret-looking keys replaced, the rest kept."""
    if "=" not in query:
        return query
    pieces = []
    for piece in query.split("&"):
        key, equals, value = piece.partition("=")
        if equals and value and SECRET_NAME.search(unquote_plus(key)):
            piece = f"{key}={REDACTED}"
        pieces.append(piece)
    return "&".join(pieces)
