"""Flask blueprints: the pages people see and the HTTP API."""
