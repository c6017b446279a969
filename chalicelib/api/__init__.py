"""HTTP blueprints; app.py registers them. Each route validates, calls one use case, shapes a reply."""
