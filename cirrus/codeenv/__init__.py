"""Code environments: what code and software made the data, captured when the object is built.

`PythonGithubEnv(path)` records a git working tree and the running Python; `DockerEnv(...)` records
the Docker image the process runs in. Both satisfy `cirrus.model.CodeEnv`: `to_json()` gives a
deterministic JSON document (no timestamps), so two captures of the same state have one digest.
gitpython and the docker SDK are imported only when a capture runs, to keep `import cirrus` light.
"""

from cirrus.codeenv.dockerenv import DockerEnv, detect_container_id
from cirrus.codeenv.gitenv import PythonGithubEnv
from cirrus.codeenv.runtime import installed_packages
from cirrus.redact import strip_credentials

__all__ = [
    "DockerEnv",
    "PythonGithubEnv",
    "detect_container_id",
    "installed_packages",
    "strip_credentials",
]
