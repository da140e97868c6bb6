"""The machine: machine.yaml loaded, checked and drawn.

Owns the YAML guards, the loading pipeline (parse, schema, rules), the frozen model,
the cache of validated machines, the `transitions` machine built from a model, the
graph, and the sandboxed templating every pipeline renders with.

May import: :mod:`runner.errors`, :mod:`runner.resources`, :mod:`runner.files`,
:mod:`runner.minischema`. Nothing above it (store, run, api, cli).
"""
