"""The dashboard (`runner serve`, the optional extra ``web``): a client of :mod:`runner.api`.

Owns the Starlette application (server-side Jinja2 pages, the JSON API under
``/api/v1/`` serving the documents of ``--output json``, server-sent events), the
watcher that notices changed environments through the store's protocols (any backend),
the token and confirmation checks, and the actions it may run (only with
``--allow-actions``). Its templates, stylesheet and script ship inside this package:
nothing is fetched from elsewhere.

May import :mod:`runner.api` and everything below it; nothing imports it but the CLI's
`serve` command, when it runs.
"""
