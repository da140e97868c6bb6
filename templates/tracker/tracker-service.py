#!/usr/bin/env python3
"""The Torrust Tracker's stand-in on the `local` provider (Python 3 standard library).

    tracker-service.py start  --config FILE --pidfile FILE --logfile FILE
    tracker-service.py stop   --pidfile FILE [--timeout SECONDS]
    tracker-service.py status --pidfile FILE

`start` reads the tracker's TOML configuration and runs a daemon (double fork, new
session, no inherited file descriptors: stdin is /dev/null, stdout and stderr go to
the log file) that listens on 127.0.0.1 at the port of `[http_api] bind_address` and
answers like the tracker's API:

    GET <health check path>        200 {"status":"Ok"}
    GET /api/v1/stats?token=TOKEN  200 with zeroed statistics (the admin token), else 401
    anything else                  404

The health check path is `[local_service] health_check_path` (default
/api/health_check, the real tracker's). `start` returns once the daemon listens (exit
0) or could not (exit 1, e.g. "port 1212 already in use on 127.0.0.1"), within 10
seconds; starting a running service does nothing. The daemon writes its pid file once
it listens, and on SIGTERM or SIGINT stops, removes the pid file and exits 0.

`stop` sends SIGTERM, waits (10 s by default), then SIGKILL; it succeeds when the
service is not running. `status` exits 0 when running, 3 when not.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import re
import select
import signal
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

DEFAULT_HEALTH_CHECK_PATH = "/api/health_check"
LISTEN_HOST = "127.0.0.1"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
PROGRAM = "tracker-service"
LEVELS = {"off": 0, "error": 1, "warn": 2, "info": 3, "debug": 4, "trace": 5}


class ServiceError(Exception):
    """A failure the user can act on; its message is printed as is."""


# --- configuration -----------------------------------------------------------------


def load_config(path: str) -> dict:
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        raise ServiceError(f"cannot read the configuration {path}: {exc.strerror}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ServiceError(f"the configuration {path} is not UTF-8 text") from exc
    try:
        import tomllib  # Python 3.11+
    except ModuleNotFoundError:
        return _parse_simple_toml(text, path)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ServiceError(f"the configuration {path} is not valid TOML: {exc}") from exc


_TOML_LINE = re.compile(r"^([A-Za-z0-9_-]+)\s*=\s*(.*)$")


def _parse_simple_toml(text: str, path: str) -> dict:
    """Enough TOML for tracker.toml on Pythons without tomllib: tables, arrays of
    tables, and string, integer and boolean values."""
    root: dict = {}
    current = root
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[["):
            keys = line.strip("[] ").split(".")
            table = _table(root, keys[:-1])
            current = {}
            table.setdefault(keys[-1], []).append(current)
            continue
        if line.startswith("["):
            current = _table(root, line.strip("[] ").split("."))
            continue
        match = _TOML_LINE.match(line)
        if not match:
            raise ServiceError(f"{path}:{number}: cannot read {line!r}")
        key, value = match.group(1), match.group(2)
        if value.startswith('"'):
            try:
                current[key], end = json.JSONDecoder().raw_decode(value)
            except ValueError:
                raise ServiceError(f"{path}:{number}: cannot read {value!r}") from None
            rest = value[end:].strip()
            if rest and not rest.startswith("#"):
                raise ServiceError(f"{path}:{number}: cannot read {line!r}")
            continue
        value = value.split("#", 1)[0].strip()
        if value in ("true", "false"):
            current[key] = value == "true"
        else:
            try:
                current[key] = int(value)
            except ValueError:
                raise ServiceError(f"{path}:{number}: unsupported value {value!r}") from None
    return root


def _table(root: dict, keys: list) -> dict:
    table = root
    for key in keys:
        value = table.setdefault(key.strip(), {})
        table = value[-1] if isinstance(value, list) else value
    return table


class Settings:
    def __init__(self, config: dict, path: str) -> None:
        api = config.get("http_api")
        if not isinstance(api, dict) or "bind_address" not in api:
            raise ServiceError(f"{path}: no [http_api] bind_address")
        self.port = _port(str(api["bind_address"]), path)
        tokens = api.get("access_tokens") or {}
        self.admin_token = str(tokens.get("admin", "")) if isinstance(tokens, dict) else ""
        local = config.get("local_service") or {}
        self.health_check_path = str(local.get("health_check_path") or DEFAULT_HEALTH_CHECK_PATH)
        if not self.health_check_path.startswith("/"):
            self.health_check_path = "/" + self.health_check_path
        level = str((config.get("logging") or {}).get("threshold", "info")).lower()
        self.level = LEVELS.get(level, LEVELS["info"])
        database = (config.get("core") or {}).get("database") or {}
        is_sqlite = database.get("driver", "sqlite3") == "sqlite3"
        self.database = str(database.get("path", "")) if is_sqlite else ""


def _port(bind_address: str, path: str) -> int:
    host, sep, port = bind_address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ServiceError(f"{path}: [http_api] bind_address {bind_address!r} has no valid port")
    return int(port)


# --- pid file and processes ---------------------------------------------------------


def read_pid(pidfile: str) -> int | None:
    try:
        with open(pidfile, encoding="ascii") as handle:
            text = handle.read().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ServiceError(f"cannot read the pid file {pidfile}: {exc}") from exc
    return int(text) if text.isdigit() and int(text) > 0 else None


def alive(pid: int) -> bool:
    """True while process ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def is_service(pid: int) -> bool:
    """True when ``pid`` is a live tracker service (not another program that got the
    pid of a dead one)."""
    if not alive(pid):
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return PROGRAM.encode() in handle.read()
    except FileNotFoundError:
        # no /proc (not Linux): trust the pid file; else the process just ended
        return not os.path.isdir("/proc")
    except OSError:
        return True


def running_pid(pidfile: str) -> int | None:
    pid = read_pid(pidfile)
    return pid if pid is not None and is_service(pid) else None


def remove_pidfile(pidfile: str, pid: int | None = None) -> None:
    """Remove ``pidfile``; with ``pid``, only when it still names that process."""
    try:
        if pid is not None and read_pid(pidfile) != pid:
            return
        os.unlink(pidfile)
    except (FileNotFoundError, ServiceError):
        pass


def write_pidfile(pidfile: str, pid: int) -> None:
    tmp = f"{pidfile}.{pid}.tmp"
    with open(tmp, "w", encoding="ascii") as handle:
        handle.write(f"{pid}\n")
    os.replace(tmp, pidfile)


# --- the daemon ---------------------------------------------------------------------


class Log:
    def __init__(self, level: int) -> None:
        self.level = level
        self.lock = threading.Lock()

    def __call__(self, level: str, message: str) -> None:
        if LEVELS[level] > self.level:
            return
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        with self.lock:
            sys.stderr.write(f"{stamp} {level.upper():5} {PROGRAM}: {message}\n")
            sys.stderr.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the host's name up in DNS: not needed
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]


def make_handler(settings: Settings, log: Log) -> type:
    class Handler(BaseHTTPRequestHandler):
        server_version = "torrust-tracker-stand-in"
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 (the http.server API)
            url = urlsplit(self.path)
            if url.path == settings.health_check_path:
                self._json(200, {"status": "Ok"})
            elif url.path == "/api/v1/stats":
                token = parse_qs(url.query).get("token", [""])[0]
                if settings.admin_token and token == settings.admin_token:
                    self._json(200, {"torrents": 0, "seeders": 0, "completed": 0, "leechers": 0})
                else:
                    self._json(401, {"error": "unauthorized"})
            else:
                self._json(404, {"error": "not found"})

        def do_HEAD(self) -> None:  # noqa: N802
            self.do_GET()

        def _json(self, status: int, body: dict) -> None:
            data = json.dumps(body, separators=(",", ":")).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log("debug", f"{self.address_string()} {format % args}")

    return Handler


def detach_stdio(logfile: str, keep: int) -> None:
    """stdin from /dev/null, stdout and stderr to ``logfile``, every other inherited
    descriptor but ``keep`` closed (a pipe left open would hang whoever started us)."""
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    log_fd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd != keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115


def report(fd: int, message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, message.encode("utf-8", "replace"))


def serve(settings: Settings, args: argparse.Namespace, report_fd: int) -> int:
    """The daemon's life, after the double fork."""
    log = Log(settings.level)
    try:
        server = Server((LISTEN_HOST, settings.port), make_handler(settings, log))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            message = f"port {settings.port} already in use on {LISTEN_HOST}"
        else:
            message = f"cannot listen on {LISTEN_HOST}:{settings.port}: {exc.strerror or exc}"
        log("error", message)
        report(report_fd, "error " + message)
        return 1
    pid = os.getpid()
    try:
        write_pidfile(args.pidfile, pid)
    except OSError as exc:
        message = f"cannot write the pid file {args.pidfile}: {exc.strerror or exc}"
        log("error", message)
        report(report_fd, "error " + message)
        server.server_close()
        return 1

    def shutdown(signum: int, _frame: object) -> None:
        log("info", f"received {signal.Signals(signum).name}, stopping")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    if settings.database:
        database = settings.database
        if os.path.isdir(os.path.dirname(database) or "."):
            try:
                import sqlite3

                sqlite3.connect(database).close()
            except Exception as exc:  # the stand-in keeps running without it
                log("warn", f"cannot open the database {database}: {exc}")
        else:
            log("warn", f"no folder for the database {database}")

    log("info", f"API listening on http://{LISTEN_HOST}:{settings.port} (pid {pid})")
    log("info", f"health check: GET {settings.health_check_path}")
    report(report_fd, f"ok {pid}")
    os.close(report_fd)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        remove_pidfile(args.pidfile, pid)
        log("info", "stopped")
    return 0


# --- commands -----------------------------------------------------------------------


def start(args: argparse.Namespace) -> int:
    for name in ("config", "pidfile", "logfile"):
        setattr(args, name, os.path.abspath(getattr(args, name)))
    settings = Settings(load_config(args.config), args.config)
    pid = running_pid(args.pidfile)
    if pid is not None:
        print(f"already running (pid {pid}), API on {LISTEN_HOST}:{settings.port}")
        return 0
    remove_pidfile(args.pidfile)  # stale
    for folder in {os.path.dirname(args.pidfile), os.path.dirname(args.logfile)}:
        if not os.path.isdir(folder):
            raise ServiceError(f"folder {folder} does not exist")

    sys.stdout.flush()
    sys.stderr.flush()
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # first child: new session, then fork the daemon and leave
        code = 1
        try:
            os.close(read_fd)
            os.setsid()
            if os.fork() == 0:
                os.chdir("/")
                os.umask(0o027)
                detach_stdio(args.logfile, keep=write_fd)
                code = serve(settings, args, write_fd)
            else:
                code = 0
        except BaseException as exc:  # never return into the caller's code
            report(write_fd, f"error {exc}")
        os._exit(code)

    os.close(write_fd)
    os.waitpid(child, 0)
    message = _wait_report(read_fd, START_TIMEOUT)
    os.close(read_fd)
    if message.startswith("ok "):
        print(f"started (pid {message[3:].strip()}), API on http://{LISTEN_HOST}:{settings.port}")
        return 0
    if message.startswith("error "):
        raise ServiceError(message[6:].strip())
    if message == "timeout":
        raise ServiceError(
            f"the service did not report within {START_TIMEOUT:.0f} s (log: {args.logfile})"
        )
    raise ServiceError(f"the service exited while starting (log: {args.logfile})")


def _wait_report(fd: int, timeout: float) -> str:
    """What the daemon wrote before closing its end of the pipe, or "timeout"."""
    deadline = time.monotonic() + timeout
    chunks = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout"
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            return b"".join(chunks).decode("utf-8", "replace")
        chunks.append(chunk)


def stop(args: argparse.Namespace) -> int:
    pid = read_pid(args.pidfile)
    if pid is None:
        print("not running (no pid file)")
        return 0
    if not is_service(pid):
        remove_pidfile(args.pidfile, pid)
        print(f"not running (stale pid file for pid {pid} removed)")
        return 0
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise ServiceError(f"not allowed to stop pid {pid}: {exc.strerror}") from exc
    if not _wait_gone(pid, args.timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if not _wait_gone(pid, 5.0):
            raise ServiceError(f"pid {pid} is still running after SIGKILL")
        remove_pidfile(args.pidfile, pid)
        print(f"stopped (pid {pid}, killed after {args.timeout:g} s)")
        return 0
    remove_pidfile(args.pidfile, pid)
    print(f"stopped (pid {pid})")
    return 0


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def status(args: argparse.Namespace) -> int:
    pid = running_pid(args.pidfile)
    if pid is None:
        print("not running")
        return 3
    print(f"running (pid {pid})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="tracker-service.py", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start_parser = commands.add_parser("start", help="start the service as a daemon")
    start_parser.add_argument("--config", required=True, help="the tracker's TOML configuration")
    start_parser.add_argument("--pidfile", required=True)
    start_parser.add_argument("--logfile", required=True)
    stop_parser = commands.add_parser("stop", help="stop the service")
    stop_parser.add_argument("--pidfile", required=True)
    stop_parser.add_argument(
        "--timeout",
        type=float,
        default=STOP_TIMEOUT,
        help="seconds to wait after SIGTERM before SIGKILL",
    )
    status_parser = commands.add_parser("status", help="exit 0 when running, 3 when not")
    status_parser.add_argument("--pidfile", required=True)
    args = parser.parse_args(argv)
    try:
        return {"start": start, "stop": stop, "status": status}[args.command](args)
    except ServiceError as exc:
        print(f"tracker service: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
