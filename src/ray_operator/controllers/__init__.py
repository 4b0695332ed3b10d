"""Thin kopf controllers: importing this package registers every handler of the operator."""

from ray_operator.controllers import login, ray, rayjob, raypipeline, runtime

__all__ = ["login", "ray", "rayjob", "raypipeline", "runtime"]
