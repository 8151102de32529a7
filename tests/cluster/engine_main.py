"""`python -m modelforge.launcher.swift_serve` for a pod whose program runs outside its container (tests/cluster).

Only the executable differs from the pod's. ms-swift checks its port by binding ('', port) and silently
moves to the next free one; in a pod (its own network namespace) that never happens, but on this shared
machine a previous engine's TIME_WAIT on another pod's 127.x address makes it leave the pod's port, where
the operator looks for /v1/models. So the check is turned off here, and the pod's port is used as given.
"""

import swift.arguments.deploy_args as deploy_args

deploy_args.find_free_port = lambda start_port=None, retry=100: start_port  # type: ignore[assignment]

from modelforge.launcher.swift_serve import main  # noqa: E402

if __name__ == "__main__":
    main()
