"""DockerEnv: the Docker image a process runs in, given or detected through the Docker Engine API.

Detection never trusts `/.dockerenv` (it exists outside containers too): the container id comes from
`/proc/self/mountinfo`, then `/proc/self/cgroup`, then `HOSTNAME`, and the engine is asked what
image that container runs. The container id itself is kept out of the JSON: it differs for every
container of one image, and would give each worker of a step its own environment document.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from cirrus.codeenv.runtime import elapsed_ms, installed_packages, warn_capture_failed
from cirrus.errors import CaptureError, InvalidInput
from cirrus.redact import redact_url

KIND = "docker"
MOUNTINFO = "/proc/self/mountinfo"
CGROUP = "/proc/self/cgroup"
ENGINE_TIMEOUT_S = 5
# a bind mount of the container's own /etc/hostname, /etc/hosts or /etc/resolv.conf (fields 4, 5);
# a Docker host's mountinfo lists other containers' directories too, mounted elsewhere
_MOUNT_ID = re.compile(
    r"^\S+ \S+ \S+ \S*/var/lib/docker/containers/([0-9a-f]{64})/\S* "
    r"/etc/(?:hostname|hosts|resolv\.conf) ",
    re.MULTILINE,
)
_CGROUP_ID = re.compile(r"(?:/docker/|docker-)([0-9a-f]{64})(?:\.scope)?\b")
_HOSTNAME_ID = re.compile(r"^[0-9a-f]{12,64}$")
_IMAGE_ID = re.compile(r"^(sha256:)?[0-9a-f]{12,64}$")
DOCKER_FIX = "Pass DockerEnv(image, tag) (and image_id if known) where the engine cannot be asked"
log = logging.getLogger("cirrus.codeenv")


class DockerUnavailable(Exception):
    """The image cannot be determined; the message says why."""


def detect_container_id(
    mountinfo: str | os.PathLike[str] = MOUNTINFO,
    cgroup: str | os.PathLike[str] = CGROUP,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The id of the container this process runs in, or None when there is no sign of one.

    The 64-hex id in mountinfo (Docker bind-mounts /etc/hostname, /etc/hosts and /etc/resolv.conf
    from /var/lib/docker/containers/<id>/; only those mount points count, as a Docker host lists
    other containers' files mounted elsewhere) works with cgroup v1 and v2; cgroup v1 paths come
    next; a HOSTNAME of 12+ hex characters (Docker's default hostname, an id prefix the engine
    accepts) last.
    """
    for path, pattern in ((mountinfo, _MOUNT_ID), (cgroup, _CGROUP_ID)):
        found = _first_match(path, pattern)
        if found:
            return found
    hostname = (os.environ if environ is None else environ).get("HOSTNAME", "")
    return hostname if _HOSTNAME_ID.match(hostname) else None


def _first_match(path: str | os.PathLike[str], pattern: re.Pattern[str]) -> str | None:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return None
    match = pattern.search(text)
    return match.group(1) if match else None


def split_reference(reference: str) -> tuple[str | None, str | None]:
    """`name:tag` (or `name`, `host:port/name:tag`, `name@sha256:...`) as (name, tag).

    A name without a tag means `latest` to Docker, but one pinned by digest has no tag (None); a
    bare image id names no image: (None, None).
    """
    name, at, _ = reference.partition("@")
    if _IMAGE_ID.match(name):
        return None, None
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        return name[:colon], name[colon + 1 :]
    return name, None if at else "latest"


def inspect_container(container_id: str, environ: Mapping[str, str] | None = None) -> dict:
    """Ask the engine (DOCKER_HOST etc. from `environ`) for the container's image.

    Returns `image`, `tag`, `image_id`, `repo_digests` and the full `container_id`.
    """
    import docker
    import requests

    try:
        client = docker.from_env(timeout=ENGINE_TIMEOUT_S, environment=environ)
    except docker.errors.DockerException as err:
        raise DockerUnavailable(f"no Docker engine reachable: {err}") from err
    try:
        container = client.api.inspect_container(container_id)
        image = client.api.inspect_image(container["Image"])
    except docker.errors.NotFound as err:
        raise DockerUnavailable(
            f"the Docker engine does not know container {container_id} "
            f"or its image: {err.explanation or err}"
        ) from err
    except (docker.errors.DockerException, requests.RequestException, KeyError) as err:
        raise DockerUnavailable(
            f"asking the Docker engine about {container_id} failed: {err}"
        ) from err
    finally:
        client.close()
    name, tag = split_reference((container.get("Config") or {}).get("Image") or "")
    return {
        "image": name,
        "tag": tag,
        "image_id": container["Image"],
        "repo_digests": sorted(image.get("RepoDigests") or []),
        "container_id": container.get("Id", container_id),
    }


def capture_docker(
    given: Mapping[str, str | None],
    mountinfo: str | os.PathLike[str] = MOUNTINFO,
    cgroup: str | os.PathLike[str] = CGROUP,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Given image/tag/image_id, completed from the engine when any is missing.

    Given values win over detected ones. When nothing was given and nothing can be detected, the
    result has `capture_error`; when something was given, what is missing is left None.
    """
    found: dict[str, Any] = {"repo_digests": None, "container_id": None}
    if any(value is None for value in given.values()):
        try:
            container_id = detect_container_id(mountinfo, cgroup, environ)
            if container_id is None:
                raise DockerUnavailable(
                    f"not running in a Docker container (no container id in {mountinfo}, "
                    f"{cgroup} or HOSTNAME)"
                )
            found.update(inspect_container(container_id, environ))
        except DockerUnavailable as err:
            if all(value is None for value in given.values()):
                found["capture_error"] = str(err)
            else:
                log.debug("DockerEnv: recording the values given, nothing detected: %s", err)
    given_values = {key: value for key, value in given.items() if value is not None}
    return {"image": None, "tag": None, "image_id": None, **found, **given_values}


def _check_given(name: str, value: Any) -> None:
    """Refuse an image, tag or image_id that is not a non-empty string (None: detect it)."""
    if value is None or (isinstance(value, str) and value.strip()):
        return
    raise InvalidInput(
        f"DockerEnv {name} must be a non-empty string, got {value!r}; pass it as text, e.g. "
        "DockerEnv(image='lab/seg', tag='v1', image_id='sha256:...'), or leave it out to detect "
        "it from inside the container"
    )


@attrs.frozen(init=False)
class DockerEnv:
    """The Docker image a process runs in.

    `DockerEnv(imagename, tag, imageID)` keeps provenance-toolbox's call shape; values given
    (strings) are used as they are. What is missing is detected from inside the running container
    through the Docker Engine API, if it can be: values given alone are no failure, what is missing
    stays None. With nothing given, a detection that fails is recorded in `to_json()` as
    `capture_error` (and logged), or raises CaptureError with `strict=True`. `mountinfo`, `cgroup`
    and `environ` (HOSTNAME, DOCKER_HOST) can be replaced, for tests.
    """

    image: str | None
    tag: str | None
    image_id: str | None
    include_packages: bool
    strict: bool
    repo_digests: tuple[str, ...] | None
    container_id: str | None = attrs.field(eq=False)
    capture_error: str | None
    packages: tuple[tuple[str, str], ...] | None = attrs.field(repr=False)
    capture_ms: float = attrs.field(eq=False, repr=False)

    def __init__(
        self,
        image: str | None = None,
        tag: str | None = None,
        image_id: str | None = None,
        include_packages: bool = False,
        strict: bool = False,
        *,
        mountinfo: str | os.PathLike[str] = MOUNTINFO,
        cgroup: str | os.PathLike[str] = CGROUP,
        environ: Mapping[str, str] | None = None,
    ):
        start = time.perf_counter()
        given = {"image": image, "tag": tag, "image_id": image_id}
        for name, value in given.items():
            _check_given(name, value)
        found = capture_docker(given, mountinfo, cgroup, environ)
        if strict and "capture_error" in found:
            raise CaptureError(
                f"DockerEnv: {found['capture_error']}. {DOCKER_FIX}, or strict=False to record "
                "the failure"
            )
        if "capture_error" in found:
            warn_capture_failed(
                "DockerEnv could not capture the image, so records of this process will not say "
                f"which image ran: {found['capture_error']}. {DOCKER_FIX}, or strict=True to raise "
                "instead of recording the failure"
            )
        digests = found["repo_digests"]
        image, tag, error = (_redacted(found.get(k)) for k in ("image", "tag", "capture_error"))
        packages = tuple(map(tuple, installed_packages())) if include_packages else None
        self.__attrs_init__(
            image,
            tag,
            found["image_id"],
            include_packages,
            strict,
            None if digests is None else tuple(digests),
            found["container_id"],
            error,
            packages,
            elapsed_ms(start),
        )

    def to_json(self) -> dict[str, Any]:
        """Image name, tag, id and repo digests (plus packages, capture_error when present)."""
        document: dict[str, Any] = {
            "kind": KIND,
            "image": self.image,
            "tag": self.tag,
            "image_id": self.image_id,
            "repo_digests": None if self.repo_digests is None else list(self.repo_digests),
        }
        if self.packages is not None:
            document["packages"] = [list(pair) for pair in self.packages]
        if self.capture_error is not None:
            document["capture_error"] = self.capture_error
        return document


def _redacted(text: str | None) -> str | None:
    """Credentials in a URL out: an image named by URL, or a DOCKER_HOST in an error."""
    return None if text is None else redact_url(text)
