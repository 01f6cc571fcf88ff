"""Steps on python-task-queue (what igneous uses): each queued task joins the step it belongs to.

A queued task carries only the step's token (a small JSON string) and a stable task id: sources,
motivation and process were filed once by `cirrus.step(...)` and are never repeated per task. The
task's writes go through a `cirrus.TaskSession`, which files one create-only fragment per volume
when the task returns (or a `failed` one when it raises, before the error reaches the queue), so a
task delivered twice, or re-run after its worker died, is counted once. `step.finish()` folds the
fragments into one record per volume.

Two shapes, pick either. A class, for `RegisteredTask` users::

    from cirrus.taskqueue import StepTask

    class PaintTask(StepTask):
        def __init__(self, token, task_id, layer, x):
            super().__init__(token, task_id, layer, x)

        def run(self, session):
            vol = session.volume(self.layer)
            vol[self.x : self.x + 64, 0:64, 0:64] = 1

    step = cirrus.step(sources=[...], motivation="...", process=process, volumes=[layer])
    tq = TaskQueue("fq:///tmp/queue")
    tq.insert(PaintTask(step.token, f"x{x}", layer, x) for x in range(0, 1024, 64))
    # workers: TaskQueue("fq:///tmp/queue").poll(lease_seconds=600)
    step.finish()

Or a function, for `@queueable` users (the first parameter receives the session; the queued
call takes `token` and `task_id` in its place)::

    from cirrus.taskqueue import step_task

    @step_task
    def paint(session, layer, x):
        session.volume(layer)[x : x + 64, 0:64, 0:64] = 1

    tq.insert(paint.task(step.token, f"x{x}", layer, x) for x in range(0, 1024, 64))

`paint.task(...)` is `partial(paint, token, task_id, ...)` with the token and task id checked
when the task is queued, not in every worker.

python-task-queue is an optional extra (`pip install cirrus-provenance[taskqueue]`): `import
cirrus` never imports it; this module does.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any

try:
    from taskqueue import RegisteredTask, queueable
except ImportError as error:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "cirrus.taskqueue needs python-task-queue: pip install 'cirrus-provenance[taskqueue]' "
        f"({error})"
    ) from error

from cirrus.step import TaskSession, join
from cirrus.steptoken import StepToken, validate_task_id

__all__ = ["StepTask", "step_task", "token_string"]


def token_string(token: Any) -> str:
    """The token as the JSON string a queue can carry (from a Step, StepToken, dict or str).

    It is checked here, so a malformed token fails when tasks are queued, not in every worker.
    """
    token = getattr(token, "token", token)  # a cirrus.Step
    if not isinstance(token, str | Mapping | StepToken):
        token = str(token)
    return StepToken.loads(token).dumps()


class StepTask(RegisteredTask):
    """A `RegisteredTask` that runs inside `cirrus.join(token, task=task_id)`.

    Subclasses define `__init__(self, token, task_id, ...)` passing every argument on to
    `super().__init__` (python-task-queue serialises what `__init__` names), and `run(session)`,
    which writes through `session.volume(path)`. `task_id` must be stable for the unit of work
    (e.g. its bounding box, `"x0-512_y0-512_z0-64"`): it is what makes a re-delivered task count
    once. Letters, digits and `._:=,+@-` only.
    """

    def __init__(self, token: Any, task_id: str, *args: Any, **kwargs: Any):
        super().__init__(token_string(token), validate_task_id(task_id), *args, **kwargs)

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        with join(self.token, task=self.task_id) as session:
            return self.run(session, *args, **kwargs)

    def run(self, session: TaskSession, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define run(self, session)")


def step_task(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register `fn(session, ...)` with `@queueable` as `fn(token, task_id, ...)`.

    The queued function joins the step with `task=task_id`, calls `fn` with the task session
    first and the remaining arguments after it, and files the task's fragment on return.
    """
    signature = inspect.signature(fn)
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
    ):
        raise TypeError(
            f"@step_task: {fn.__qualname__} must take the task session as its first positional "
            "parameter, e.g. def paint(session, layer, x)"
        )
    clashes = {"token", "task_id"} & {p.name for p in parameters[1:]}
    if clashes:
        raise TypeError(f"@step_task: {fn.__qualname__} may not name a parameter {clashes}")

    @functools.wraps(fn)
    def task(token: Any, task_id: str, *args: Any, **kwargs: Any) -> Any:
        with join(token, task=task_id) as session:
            return fn(session, *args, **kwargs)

    given = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for name in ("token", "task_id")
    ]
    task.__signature__ = signature.replace(parameters=[*given, *parameters[1:]])  # type: ignore[attr-defined]
    queued = queueable(task)

    def checked(token: Any, task_id: str, *args: Any, **kwargs: Any) -> functools.partial:
        """The task to queue, its token and task id checked now rather than in every worker
        (where a bad one fails at each redelivery)."""
        return functools.partial(
            queued, token_string(token), validate_task_id(task_id), *args, **kwargs
        )

    queued.task = checked  # type: ignore[attr-defined]
    return queued
