"""The wire format: message types, framing, authentication and value serialization.

This package is the only place that knows how bytes on a socket look.
"""
