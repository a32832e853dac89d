"""The engine: the process that runs tasks, or hosts one actor.

It does not import the client side (shoal.core): the engine process's
program, `python -m shoal.core.worker`, connects a core Client, makes it the
process's runtime and hands the engine the services it needs (see
`engine.Services`)."""
