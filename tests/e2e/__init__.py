"""End-to-end tests: the shipped machine's whole lifecycle through the CLI and real tools
(OpenTofu's embedded engine, Ansible, sshd), signals and kills at every instant. The
helpers are in :mod:`tests.e2e.harness` and :mod:`tests.e2e.sshd`."""
