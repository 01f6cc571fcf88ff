"""cirrus: provenance for every CloudVolume write, recorded once per step, atomically.

`import cirrus` stays light: CloudVolume, git, docker and the cloud clients load on first use.
"""

from cirrus import errors
from cirrus._version import __version__
from cirrus.abandon import abandon, abandon_dead
from cirrus.codeenv import DockerEnv, PythonGithubEnv
from cirrus.compat import (
    CloudVolume,
    add_motivation,
    add_note,
    add_result,
    addgeneric,
    addmotivation,
    addresult,
    log_process,
    logprocess,
)
from cirrus.model import Note, Process, Record
from cirrus.reading import history
from cirrus.rollforward import recover
from cirrus.session import Session, session
from cirrus.step import Step, TaskSession, join, step
from cirrus.stepfinish import finish
from cirrus.stepfinish import status as step_status
from cirrus.steptoken import StepToken
from cirrus.storage.paths import use_secrets

__all__ = [
    "CloudVolume",
    "DockerEnv",
    "Note",
    "Process",
    "PythonGithubEnv",
    "Record",
    "Session",
    "Step",
    "StepToken",
    "TaskSession",
    "__version__",
    "abandon",
    "abandon_dead",
    "add_motivation",
    "add_note",
    "add_result",
    "addgeneric",
    "addmotivation",
    "addresult",
    "errors",
    "finish",
    "history",
    "join",
    "log_process",
    "logprocess",
    "recover",
    "session",
    "step",
    "step_status",
    "use_secrets",
]
