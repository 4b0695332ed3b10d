"""The controller runtime the three controllers share.

Informers, a rate-limited work queue, events, leader election, metrics and probes, and the
manager that runs them in order.
"""
