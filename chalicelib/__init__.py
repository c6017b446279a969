"""Everything Chalice deploys besides app.py: HTTP blueprints, jobs, tables, repositories, adapters."""
