"""Scheduled jobs; app.py wires each to its schedule."""
