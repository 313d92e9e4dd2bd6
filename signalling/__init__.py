"""HTTP signalling for callbot: routes, auth, call registry, hooks, metrics.

Apps embed callbot through the top-level package: `from callbot import create_app, mount`.
"""
