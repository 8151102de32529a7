"""Pure builders: (spec, plan, attempt, operator settings) -> Kubernetes manifests as plain dicts."""
