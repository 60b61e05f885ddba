"""The admin HTTP API (`/api/v1/...`): one module per resource, routed by `routing`."""
