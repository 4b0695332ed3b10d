"""``python -m ray_operator`` is the ``ray-operator`` command."""

from ray_operator.cli import main

main()
