"""Print the key of the shared dependency virtualenv: a hash of every dependency list in
pyproject.toml and of the Python that runs it. Same key, same packages: a fresh clone reuses it."""

import hashlib
import json
import platform
import sys
import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"]
spec = {
    "dependencies": project.get("dependencies", []),
    "optional": project.get("optional-dependencies", {}),
    "python": platform.python_version(),
    "machine": platform.machine(),
}
sys.stdout.write(hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16] + "\n")
