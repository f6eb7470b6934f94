"""The node seen from a browser and from monitoring: dashboard pages, the REST API under
/api/v1 (same keys as the CLI's --json, from rtnode.views), /metrics and /healthz, served by
``rtnode serve`` in a thread of its own (rtnode.web.server)."""
