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
_END = r"\s\"'<>"  # what ends a URL in running text
_SCHEME = re.compile(rf"{_SCHEME_NAME}://")
_DOS_DRIVE = re.compile(r"[A-Za-z]:[\\/]")
_SCP_USERINFO = re.compile(r"(?P<userinfo>.*)@(?P<rest>(?:\[[^\]/]*\]|[^@:/\[\]]+):.*)", re.DOTALL)
# a URL runs to whitespace or quotes, or to a `,` `;` `|` before another `://`
_URL_IN_TEXT = re.compile(rf"{_SCHEME_AT}(?:(?![,;|]\s*[{_SCHEME_CHARS}]*://)[^{_END}])*")
# userinfo after a `scheme://`, in running text: a user name (or a bare token), a `:` and a
# password if any, an `@`. A user name stops at a `,`, as in `https://h,--owner=me@lab.org` the
# `,` ends the URL. A password runs to its `@` over anything that does not end a URL: written
# unencoded it may hold `,` `/` `?` `#` (`usr:PW,XQ@`, `AKIA:sec/ret@`), which urlsplit reads
# as the end of the host. It stops at a `://` (another URL's, matched on its own: so each part
# of the text is scanned once or twice, and the scan stays linear). Then on over each `@` that
# no `/` `?` `#` or `,` precedes, as urlsplit reads `u:p@ss@h` (a password may hold an `@`).
_USER = rf"[^:/?#@,{_END}]*"
_USERINFO_AFTER = rf"(?P<user>{_USER})(?::(?:(?!://)[^@{_END}])*)?@(?:[^/?#@,{_END}]*@)*"
# a nested URL (`precomputed://https://...`) has no userinfo before its scheme; nested schemes
# are written in lower case, AWS key ids in upper case (`AKIA0123://x…@` is a user and password)
_NESTED_SCHEME = r"[a-z][a-z0-9+.-]*://"
# a host and port that a `/` `?` or `#` ends: what follows is a path, a query or a fragment, so
# an `@` in it is no userinfo (`http://localhost:3000/@vite/client`, `http://[::1]/x@y`). A
# secret written unencoded starts with digits and a `/` often enough (one in 300 AWS keys) to
# take for a host only an IPv6 literal, `localhost` or a name with a dot (not `AKIA0123:12/x…@`)
# and for a port only 2 to 5 digits, no leading 0 (not `john.doe:7/x…@`)
_HOST = rf"\[[^\]/?#@{_END}]*\]|(?i:localhost)|[^:/?#@,.{_END}]*\.{_USER}"
_HOST_PORT = rf"(?:{_HOST})(?::[1-9][0-9]{{1,4}})?[/?#]"
_USERINFO = re.compile(rf"{_SCHEME_AT}(?!{_HOST_PORT}|{_NESTED_SCHEME}){_USERINFO_AFTER}")
# names of fields, parameters and query keys whose values are secrets: `Process` refuses such
# parameters, and `redact_url` blanks such query values
SECRET_NAME = re.compile(
    r"passw(or)?d|passphrase|[_-]pwd$|secret(?!ar(y|ies))|token(?![a-z])|credential"
    r"|(^|[_-])creds?$|private[_-]?key|access[_-]?key|api[_-]?key|(^|[_-])key$"
    r"|^(x-(amz|goog)-)?signature$|(^|[_-])sig$|(^|[_-])auth$|authori[sz]ation"
    r"|(^|[_-])(cookies?|jwt|bearer|pass)$|auth[_-]?header|conn(ection)?[_-]?str(ing)?$",
    re.IGNORECASE,
)
# a private key pasted as a value (a service account's JSON key, an ssh key): whatever its name
PRIVATE_KEY_BLOCK = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY( BLOCK)?-----")
REDACTED = "REDACTED"


def strip_credentials(url: str) -> str:
    """`url` without secrets: userinfo dropped (a bare `token@` is a secret too), except that an ssh
    user name is kept (it is not a secret) while any password is dropped: in `ssh://` URLs and in
    scp-like `user:password@host:path` alike. Query and fragment of http(s) URLs are dropped as they
    can carry access tokens.

    The userinfo is what urlsplit reads, and also what `redact_url` reads in text: a password
    written unencoded goes whole even if it holds a `/`, `?` or `#` (where urlsplit ends the host).
    A URL urlsplit cannot read (a malformed host: `https://[::1/x`) is kept as it is when no `@`
    is left in it, and otherwise replaced by `<unparseable remote url>`.
    """
    scp = _strip_scp_password(url)
    if scp is not None:
        return scp
    url = _USERINFO.sub(_drop_userinfo, url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable remote url>" if "@" in url else url
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

    Userinfo goes (an ssh user name stays), and the values of query or fragment parameters that
    carry signatures or tokens (X-Amz-Signature, X-Amz-Credential, X-Goog-Signature,
    X-Goog-Credential, Signature, sig, token, access_token, ...) become `REDACTED`. Every `://`
    counts, whatever precedes its scheme (`--https://`, `é+https://`), and a URL nested in another
    (`precomputed://https://...`, `?url=https://...`) loses its userinfo too.

    Where userinfo ends in running text is a guess, made to hide any credential. A
    `user:password@` goes whatever its password holds but whitespace and quotes
    (`https://usr:PW,XQ@h`, `s3://AKIA:sec/ret@b`), unless before its `:` comes a host (a name
    with a dot, `localhost`, an IP address) and any port, ended by a `/` `?` or `#`
    (`http://localhost:3000/@vite` is kept), or a nested URL's lower-case scheme
    (`precomputed://gs://b/x@v1`). A `user@` goes when no `/` `?` `#` or `,` precedes its `@`
    (`https://h,--owner=me@lab.org` is kept: a `,` may end a URL). A URL urlsplit cannot read
    (`https://[::1/x`) is read the same way. The scan is linear in the text's length. Text
    without a URL, or URLs without credentials, come back unchanged.
    """
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(_redact_found_url, text)


def _redact_found_url(match: re.Match) -> str:
    """A URL found in text (after what came before its scheme: `--` in `--https://`) without the
    userinfo after each `://` in it, then with secret query and fragment parameters blanked."""
    url = _USERINFO.sub(_drop_userinfo, match.group())
    url, hash_sign, fragment = url.partition("#")
    url, question_mark, query = url.partition("?")
    query, fragment = _redact_parameters(query), _redact_parameters(fragment)
    return f"{url}{question_mark}{query}{hash_sign}{fragment}"


def _drop_userinfo(match: re.Match) -> str:
    """A `scheme://user:password@` matched by `_USERINFO` as `scheme://` (`ssh://user@` for ssh)."""
    scheme, user = match["scheme"], match["user"]
    keep = f"{user}@" if scheme.lower() in _SSH_SCHEMES and user else ""
    return f"{match['lead']}{scheme}://{keep}"


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
