"""GitOps: what git says about the desired state, and PR-comment rendering and splitting."""
