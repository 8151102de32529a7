"""`python -m modelforge.launcher.swift_serve ARGS`: `swift deploy ARGS` with the API key kept out of the
argv and the logs.

ms-swift takes its key only as `--api_key`, and logs every argument at start (`args: DeployArguments(...)`).
A key there would be in the pod spec's expanded arguments, in `ps`, and in the engine log. This entry point
starts ms-swift's own server exactly as `swift deploy` does, without the key, and only then sets the key
from the environment variable the Secret reference fills (MODELFORGE_API_KEY) and installs ms-swift's own
authentication middleware with it. Proven by tests/integration/test_swift_serving.py (401 without it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

API_KEY_ENV = "MODELFORGE_API_KEY"


def main(argv: Sequence[str] | None = None) -> None:
    from swift.pipelines.infer.deploy import SwiftDeploy

    from .remote_code import apply_policy

    args = list(sys.argv[1:] if argv is None else argv)
    if any(a.replace("-", "_").startswith("__api") for a in args):  # --api_key, --api-key, --api_key=...
        raise SystemExit(f"give the API key in ${API_KEY_ENV} (from a Secret), never as --api_key")
    apply_policy()  # a model's own code only with spec.model.trustRemoteCode (launcher/remote_code.py)
    deploy = SwiftDeploy(args)  # logs its arguments: none of them is the key
    key = os.environ.get(API_KEY_ENV)
    if key:
        deploy.args.api_key = key
        deploy._install_auth_middleware()  # what SwiftDeploy.__init__ does when --api_key is given
    deploy.main()


if __name__ == "__main__":
    main()
