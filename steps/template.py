"""The `template` step: render a file or a folder into the build directory.

Files named ``*.j2`` are rendered with the sandboxed Jinja2 environment (undefined
names are errors) and written without the suffix; other files are copied. File modes
are kept. Sources must live in the machine's folder or the working directory, and
targets in the working directory.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2

from runner.errors import StepError
from runner.files import replace_atomically
from runner.machine.templating import file_environment, render_bounded
from runner.plugin import Step, StepContext

SUFFIX = ".j2"


class TemplateStep(Step):
    name = "template"
    description = (
        "Render a file or a folder: `*.j2` files are rendered with Jinja2 and written "
        "without the suffix, other files are copied; file modes are kept."
    )
    params_schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "additionalProperties": False,
        "required": ["source", "target"],
        "properties": {
            "source": {
                "type": "string",
                "minLength": 1,
                "description": "File or folder to render; relative paths are relative to the "
                "folder of machine.yaml. Must be inside that folder or the working directory.",
            },
            "target": {
                "type": "string",
                "minLength": 1,
                "description": "Where to write: a folder for a folder source; a file (or an "
                "existing folder) for a file source. Relative to the working directory, "
                "and inside it.",
            },
            "vars": {
                "type": "object",
                "description": "Extra template variables, added to the step's template "
                "context (env, inputs, outputs, machine, phase, step).",
            },
        },
    }

    def run(self, ctx: StepContext, params: dict[str, Any]) -> dict[str, Any]:
        workdir = ctx.workdir.resolve()
        machine_dir = ctx.machine_dir.resolve()
        source = ctx.resolve_source(params["source"]).resolve()
        if not (_inside(source, machine_dir) or _inside(source, workdir)):
            raise StepError(
                "configuration",
                f"template source {params['source']!r} resolves to {source}, which is outside "
                f"the machine folder ({machine_dir}) and the working directory ({workdir})",
                hint="keep templates next to machine.yaml or in the working directory",
            )
        if not source.exists():
            raise StepError("configuration", f"template source {source} does not exist")
        target = ctx.resolve(params["target"]).resolve()
        if not _inside(target, workdir) or target == workdir:
            raise StepError(
                "configuration",
                f"template target {params['target']!r} resolves to {target}, which is not "
                f"inside the working directory ({workdir})",
                hint="write rendered files under the build directory, e.g. "
                "'{{ env.build_dir }}/...'",
            )
        renderer = _Renderer(
            context={**ctx.template_context, **(params.get("vars") or {})},
            roots=(machine_dir, workdir),
            shown_from=(machine_dir, workdir),
        )
        if source.is_dir():
            written = renderer.tree(source, target)
        else:
            written = [renderer.single(source, target)]
        for path in written:
            ctx.log_line(f"wrote {_shown(path, (workdir,))}")
        return {
            "files": [_shown(p, (workdir,)) for p in written],
            "target": _shown(target, (workdir,)),
        }


class _Renderer:
    def __init__(
        self,
        context: Mapping[str, Any],
        roots: tuple[Path, ...],
        shown_from: tuple[Path, ...],
    ) -> None:
        self._context = context
        self._roots = roots
        self._shown_from = shown_from

    def tree(self, source: Path, target: Path) -> list[Path]:
        env = file_environment(str(source), self._roots)
        written: list[Path] = []
        for folder, dirnames, filenames in os.walk(source):
            base = Path(folder)
            dirnames.sort()
            for name in dirnames:
                if (base / name).is_symlink():
                    raise StepError(
                        "configuration",
                        f"template folder {_shown(base / name, self._shown_from)} is a "
                        "symbolic link; links to folders are not followed",
                    )
            relative = base.relative_to(source)
            out_dir = target / relative
            if not _inside(out_dir.resolve(), target):
                raise StepError(
                    "configuration", f"refusing to write {out_dir}: it leads outside {target}"
                )
            out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            for name in sorted(filenames):
                path = base / name
                self._check_inside(path)
                rel = relative / name
                if name.endswith(SUFFIX) and len(name) > len(SUFFIX):
                    out = target / rel.parent / name[: -len(SUFFIX)]
                    text = self._render(env, rel.as_posix(), path)
                    written.append(_write(out, text.encode("utf-8"), path, target))
                else:
                    written.append(_write(target / rel, path.read_bytes(), path, target))
        return written

    def single(self, source: Path, target: Path) -> Path:
        self._check_inside(source)
        rendered = source.name.endswith(SUFFIX)
        if target.is_dir():
            name = source.name[: -len(SUFFIX)] if rendered else source.name
            target = target / name
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if rendered:
            text = self._render(
                file_environment(str(source.parent), self._roots), source.name, source
            )
            return _write(target, text.encode("utf-8"), source, target.parent)
        return _write(target, source.read_bytes(), source, target.parent)

    def _check_inside(self, path: Path) -> None:
        real = path.resolve()
        if not any(_inside(real, root) for root in self._roots):
            raise StepError(
                "configuration",
                f"template file {_shown(path, self._shown_from)} links to {real}, outside "
                "the machine folder and the working directory",
            )

    def _render(self, env: jinja2.Environment, name: str, path: Path) -> str:
        shown = _shown(path, self._shown_from)
        try:
            return render_bounded(env.get_template(name), self._context)
        except jinja2.TemplateSyntaxError as exc:
            where = _shown(Path(exc.filename), self._shown_from) if exc.filename else shown
            raise StepError(
                "template", f"{where}:{exc.lineno}: template syntax error: {exc.message}"
            ) from exc
        except jinja2.TemplateNotFound as exc:
            raise StepError(
                "template", f"{shown}: included template {exc.name!r} not found"
            ) from exc
        except UnicodeDecodeError as exc:
            raise StepError("template", f"{shown}: not UTF-8 text ({exc.reason})") from exc
        except jinja2.UndefinedError as exc:
            where = self._where(exc.__traceback__, shown)
            raise StepError("template", f"{where}: undefined variable: {exc.message}") from exc
        except jinja2.exceptions.SecurityError as exc:
            where = self._where(exc.__traceback__, shown)
            raise StepError("template", f"{where}: refused by the template sandbox: {exc}") from exc
        except Exception as exc:  # errors raised by filters and tests inside the template
            where = self._where(exc.__traceback__, shown)
            raise StepError("template", f"{where}: {type(exc).__name__}: {exc}") from exc

    def _where(self, tb: TracebackType | None, shown: str) -> str:
        """``file:line`` of the innermost template frame of a rendering error."""
        found = shown
        while tb is not None:
            filename = tb.tb_frame.f_code.co_filename
            if filename.endswith(SUFFIX) or _is_file_under(filename, self._roots):
                found = f"{_shown(Path(filename), self._shown_from)}:{tb.tb_lineno}"
            tb = tb.tb_next
        return found


def _is_file_under(filename: str, roots: tuple[Path, ...]) -> bool:
    path = Path(filename)
    return path.is_absolute() and path.suffix != ".py" and any(_inside(path, r) for r in roots)


def _write(out: Path, data: bytes, source: Path, within: Path) -> Path:
    """Write ``data`` to ``out`` atomically with ``source``'s mode; a link at ``out`` is
    replaced, never followed."""
    parent = out.parent.resolve()
    if not _inside(parent, within.resolve()):
        raise StepError("configuration", f"refusing to write {out}: it leads outside {within}")
    if out.is_dir() and not out.is_symlink():
        raise StepError("configuration", f"cannot write {out}: a folder of that name exists")
    # the source's owner bits only: what the runner writes under build/ is private
    mode = stat.S_IMODE(source.stat().st_mode) & 0o700 | 0o600
    replace_atomically(parent / out.name, data, mode=mode, durable=False)
    return parent / out.name


def _inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _shown(path: Path, bases: tuple[Path, ...]) -> str:
    """``path`` relative to the first of ``bases`` that holds it, else as is."""
    for base in bases:
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            continue
    return str(path)
