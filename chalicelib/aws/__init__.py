"""Thin adapters around one boto3 client each, built lazily once per container."""
