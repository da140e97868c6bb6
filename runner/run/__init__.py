"""Running phases: one environment, one phase, under the caller's lock.

Owns the session (state changes through the `transitions` machine, each one
persisted), the phase runner and its per-run context, signals, traces, inputs and
secrets, the step registry and the process helper steps run programs with.

May import: :mod:`runner.machine`, :mod:`runner.store`, :mod:`runner.plugin` and the
bottom modules. Not the api or cli packages.
"""
