"""Typed models of every resource, their defaults and their validation."""
