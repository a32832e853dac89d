"""The client side: runtime, object refs, remote functions and the API calls."""
