"""Pure-ASGI middleware (Starlette's BaseHTTPMiddleware would buffer streamed uploads and
downloads). Outermost first: RequestContext, BodyLimit, AuditTrail."""
