"""Pure functions from a resource to the Kubernetes objects it needs: no network, clock or env."""
