"""Code shared by the SeedFarmer modules under ``deploy/aws/modules/``.

Parameter parsing (``parameters``), the constructs both modules build the same way (``constructs``)
and the cdk-nag wiring (``nag``). Each module's ``app.py`` puts ``deploy/aws`` on ``sys.path``.
"""
