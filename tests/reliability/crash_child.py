"""A child process for the crash tests: run sessions deterministically, maybe die by SIGKILL.

    python -m tests.reliability.crash_child '{"paths": [...], "sessions": [0, 1],
        "crash": {"session": 1, "kind": "records", "nth": 2, "when": "after"}}'

Clock and session ids are made deterministic (per session index), so two runs of the same
session store byte-identical records: a crashed run, recovered, can be compared object for
object with a run that did not crash. The clock reads 2024, so these records look long dead to
`cirrus.recover`; `"real_clock": true` keeps the real clock (records that look in flight).
The crash is a real `SIGKILL` of this process at the `nth` storage write whose key is of
`kind` ("envs", "records" or "summary"), `before` it reaches storage or `after` it was applied.
"""

from __future__ import annotations

import datetime as real_dt
import json
import os
import signal
import sys
import threading
import types

UTC = real_dt.timezone.utc
_state = {"session": 0, "tick": 0, "armed": False, "count": 0}
_lock = threading.Lock()
_serial = threading.Lock()  # armed writes of the crash's kind, one at a time


class Clock(real_dt.datetime):
    """`now()` is 2024-01-01 <session>:00:00 plus one microsecond per reading."""

    @classmethod
    def now(cls, tz=None):
        with _lock:
            _state["tick"] += 1
            tick = _state["tick"]
        return cls(2024, 1, 1, _state["session"], 0, 0, tick, tzinfo=UTC)


def deterministic(real_clock: bool = False) -> None:
    import cirrus  # noqa: F401 - the modules are in sys.modules

    model, scope = sys.modules["cirrus.model"], sys.modules["cirrus.writescope"]
    if not real_clock:
        model.dt = types.SimpleNamespace(datetime=Clock, timezone=real_dt.timezone)
    scope.uuid = types.SimpleNamespace(
        uuid4=lambda: types.SimpleNamespace(hex=f"{_state['session'] + 1:032x}")
    )


def kind_of(key: str) -> str:
    if key == "provenance":
        return "summary"
    return key.split("/")[1] if key.startswith("provenance.d/") else key


class CrashingBackend:
    """Kills the process at the `nth` armed write of a key of `kind`."""

    def __init__(self, backend, crash):
        self.backend = backend
        self.cloudpath = backend.cloudpath
        self.crash = crash

    def get(self, key):
        return self.backend.get(key)

    def list(self, prefix):
        return self.backend.list(prefix)

    def _matches(self, key) -> bool:
        if not _state["armed"] or kind_of(key) != self.crash["kind"]:
            return False
        with _lock:
            _state["count"] += 1
            return _state["count"] == self.crash["nth"]

    def _write(self, key, call):
        # Volumes stage in parallel: armed writes of the crash's kind go one at a time, so
        # "after the nth" means exactly n of them landed and "before the nth" exactly n - 1
        # (the process dies holding the lock, before any other can land).
        if not _state["armed"] or kind_of(key) != self.crash["kind"]:
            return call()
        with _serial:
            when = self.crash.get("when")
            if when == "before" and self._matches(key):
                _die(key)
            token = call()
            if when == "after" and self._matches(key):
                _die(key)
            return token

    def put_new(self, key, data):
        return self._write(key, lambda: self.backend.put_new(key, data))

    def put_if_match(self, key, data, token):
        return self._write(key, lambda: self.backend.put_if_match(key, data, token))


def _die(key: str) -> None:
    print(f"CRASH at {key}", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)


def main(spec: dict) -> None:
    import cirrus
    from cirrus.storage import wrap_backends
    from tests.reliability import support

    deterministic(spec.get("real_clock", False))
    crash = spec.get("crash")
    paths = spec["paths"]
    with wrap_backends(lambda backend: CrashingBackend(backend, crash or {"kind": None})):
        for index in spec["sessions"]:
            _state["session"], _state["tick"] = index, 0
            s = cirrus.session(
                support.session_sources(index),
                f"motivation {index}",
                support.session_process(index),
            )
            for j, path in enumerate(paths):
                support.paint(s, path, index, value=(index * 7 + j) % 251 + 1)
            s.result(f"result {index}")
            _state["armed"] = bool(crash) and crash["session"] == index
            s.commit()
            _state["armed"] = False
            print("COMMITTED", index, json.dumps(s.records), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
