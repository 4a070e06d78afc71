"""Fault injection for the chaos campaign (``make chaos``, tests/chaos/)."""
