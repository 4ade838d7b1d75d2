"""The HTTP layer: app factory, handlers, one error middleware."""
