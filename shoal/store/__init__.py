"""The per-host object store: one file per object in shared memory."""
