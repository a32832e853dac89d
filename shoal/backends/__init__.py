"""Other engines that run shoal's API, the magics and the widgets (see
shoal.core.backend for the interface, docs/backends.md for the guide).

Each backend is a package here, imported only when its address scheme is
used (`shoal.init(address="ray")`): `import shoal` imports none of them.
"""
