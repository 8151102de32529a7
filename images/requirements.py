"""Print the requirement lines of pyproject.toml's dependencies and the named extras, one per line.

The images install their dependencies (pinned by constraints.txt) in a layer of their own, before the
modelforge package is copied in, so that a change to the code rebuilds only the last, small layer.
Usage: python3 requirements.py PYPROJECT [EXTRA ...]"""

import sys
import tomllib

with open(sys.argv[1], "rb") as f:
    project = tomllib.load(f)["project"]
lines = list(project["dependencies"])
for extra in sys.argv[2:]:
    lines += project["optional-dependencies"][extra]
print("\n".join(lines))
