"""A step's token and task ids: what a task is handed, checked before it becomes a storage key."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import attrs

from cirrus.canonical import check_step_id
from cirrus.errors import InvalidInput, StepError
from cirrus.storage.paths import normalise_cloudpath

TOKEN_VERSION = 1
_TASK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=,+@-]{0,199}")


def is_task_id(task: Any) -> bool:
    return isinstance(task, str) and bool(_TASK_ID.fullmatch(task))


def validate_task_id(task: Any) -> str:
    """Task ids become part of a key: letters, digits and ._:=,+@- only, no path separators."""
    if not is_task_id(task):
        raise InvalidInput(
            f"task id {task!r} is not usable: use 1-200 characters from letters, digits and "
            "._:=,+@- starting with a letter or digit, e.g. 'x0-512_y0-512_z0-64'"
        )
    return task


@attrs.frozen
class StepToken:
    """What a task needs to join a step: its id and its volumes. Small, JSON, safe to queue."""

    id: str
    volumes: tuple[str, ...]

    def dumps(self) -> str:
        return json.dumps({"cirrus_step": TOKEN_VERSION, "id": self.id, "volumes": self.volumes})

    @classmethod
    def loads(cls, token: Any) -> StepToken:
        """The token from its JSON string (as `step.token` gives it), a dict of it, or the
        `cirrus.Step` itself; anything else is a StepError saying what to pass."""
        if isinstance(token, StepToken):
            return token
        if isinstance(getattr(token, "token_data", None), StepToken):  # a cirrus.Step
            return token.token_data
        try:
            data = json.loads(token) if isinstance(token, str) else dict(token)
            if not isinstance(data, dict):
                raise ValueError(f"a JSON {type(data).__name__}, not an object")
            if data.get("cirrus_step") != TOKEN_VERSION:
                raise ValueError(f"unknown token version {data.get('cirrus_step')!r}")
            if not isinstance(data["volumes"], (list, tuple)) or not data["volumes"]:
                raise ValueError(f"volumes must be a non-empty list, got {data['volumes']!r}")
            volumes = tuple(normalise_cloudpath(v) for v in data["volumes"])
            return cls(check_step_id(data["id"]), volumes)
        except (ValueError, KeyError, TypeError) as error:
            raise StepError(
                f"not a cirrus step token ({error}); pass the string `step.token` unchanged"
            ) from None


def check_token_volumes(token: StepToken, manifest: Mapping[str, Any]) -> tuple[str, ...]:
    """The step's volumes as its `manifest` names them (normalised, in its order), refusing a
    token whose volumes differ: through it a finish would record a volume the step does not
    have, or leave one it has open forever, and a task would write outside the step."""
    volumes = tuple(dict.fromkeys(normalise_cloudpath(v) for v in manifest["volumes"]))
    extra = [v for v in dict.fromkeys(token.volumes) if v not in volumes]
    missing = [v for v in volumes if v not in token.volumes]
    if not (extra or missing):
        return volumes
    wrong = [f"it adds {', '.join(extra)}, which the step was not opened on"] if extra else []
    wrong += [f"it leaves out {', '.join(missing)}"] if missing else []
    shared = next((v for v in volumes if v in token.volumes), volumes[0])
    raise StepError(
        f"the token of step {token.id} does not list the volumes the step was opened on, as "
        f"its manifest (provenance.d/steps/{token.id}/step.json) does: {'; '.join(wrong)}. "
        f"Pass the token unchanged: `cirrus step token {shared} {token.id}` prints it"
    )
