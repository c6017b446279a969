"""Spot Optimizer infrastructure: the CDK app (entry point main.py; see README.md)."""
