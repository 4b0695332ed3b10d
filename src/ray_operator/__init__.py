"""Ray on Kubernetes from Python."""
