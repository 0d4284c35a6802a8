"""The web API's core: a query string becomes the command line, run by the CLI's own parser and
command functions in-process; the schema of every command is read off the same parser.

Nothing here defines a flag: `build_parser()` is the one definition. The API refuses only what a
server must not do for a remote caller — read or write files on the server's disk (`--calibration`,
`-o`, `--plot`, `--trace`, a model or GPU given as a path) — and asks for uploads instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from llmsizer.errors import ImpossibleResultError, LlmsizerError
from llmsizer.web import memo

# The API offers every command of the parser but these (serve itself).
NOT_IN_API = frozenset({"serve"})
# Flags that name files on the server's disk, or that only shape the terminal output.
SERVER_ONLY_FLAGS = frozenset({"calibration", "output-file", "plot", "trace", "training-cases",
                               "inference-cases", "write", "json", "help", "markdown"})
TRUE_WORDS = ("", "1", "true", "on", "yes")
FALSE_WORDS = ("0", "false", "off", "no")
MAX_PARAMS = 64
# Commands that run one at a time. The others run concurrently: the CLI's notes are kept per
# thread, its caches are functools caches (thread-safe) or memos written with the value any
# thread would compute. The serving simulation's step-cost cache (analysis/serving_sim.py,
# `_COSTS`) is a plain dict tested, cleared and read in three steps, so two simulations at once
# could lose an entry between them (KeyError).
SERIAL_COMMANDS = frozenset({"simulate", "plan-serve"})
MAX_VALUE_CHARS = 1024
UPLOAD_PREFIX = "upload:"


class ApiError(Exception):
    """A refusal: HTTP status and the one-line message (the CLI's words where the CLI refused)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.message = " ".join(message.split())
        self.status = status


class _ParseExit(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Answer:
    """What a command printed (JSON text), its exit status and the notes it left."""

    text: str
    status: int
    notes: tuple[str, ...]

    def data(self) -> Any:
        return json.loads(self.text)


def _patched_exit(parser: argparse.ArgumentParser) -> None:
    """Make the parser raise instead of printing and exiting (threads share one process)."""

    def exit_(status: int = 0, message: str | None = None) -> None:
        raise _ParseExit((message or "").strip())

    parser.exit = exit_  # type: ignore[method-assign]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


class Cli:
    """The CLI's parser, built once, with its errors captured rather than printed."""

    def __init__(self) -> None:
        from llmsizer.cli import build_parser

        self.parser = build_parser()
        _patched_exit(self.parser)
        self.commands = {name: sub for name, sub in _subparsers(self.parser).items()
                         if name not in NOT_IN_API}
        for sub in self.commands.values():
            _patched_exit(sub)
        self.cache_lock = threading.Lock()  # guards the answer cache only, never a command
        self.serial_lock = threading.Lock()  # SERIAL_COMMANDS, one at a time
        self.upload_lock = threading.Lock()
        self.cache: OrderedDict[tuple[str, ...], Answer] = OrderedDict()
        memo.install()  # the sweep's passes, remembered across answers (web/memo.py)
        self.uploads: dict[str, str] = {}  # token -> path of a checked config.json
        self._schema: dict[str, Any] | None = None

    # -- the schema ------------------------------------------------------------------------------

    def schema(self) -> dict[str, Any]:
        if self._schema is None:
            self._schema = {"commands": {name: command_schema(sub)
                                         for name, sub in self.commands.items()}}
        return self._schema

    # -- running ---------------------------------------------------------------------------------

    def argv(self, command: str, query: list[tuple[str, str]]) -> list[str]:
        """The command line a query stands for; refuses unknown and server-only parameters."""
        if command not in self.commands:
            raise ApiError(f"unknown command {command[:60]!r}: one of "
                           f"{', '.join(self.commands)}", 404)
        if len(query) > MAX_PARAMS:
            raise ApiError(f"{len(query)} query parameters is not allowed (at most {MAX_PARAMS})")
        flags = {f["name"]: f for f in self.schema()["commands"][command]["flags"]}
        seen: set[str] = set()
        positional: list[str] = []
        options: list[str] = []
        for key, value in query:
            if key in ("view", "lang_page", "compare"):  # the page's own state, not flags
                continue
            if key in seen:
                raise ApiError(f"{key} is given twice: give each parameter once")
            seen.add(key)
            flag = flags.get(key)
            if flag is None:
                allowed = ", ".join(n for n, f in flags.items() if f["web"])
                raise ApiError(f"{key[:60]!r} is not a flag of {command} (allowed: {allowed})")
            if not flag["web"]:
                raise ApiError(f"--{key} is not allowed on the server: it reads or writes files "
                               "on the server's disk (upload a config.json with POST "
                               "/api/config instead)")
            if len(value) > MAX_VALUE_CHARS:
                raise ApiError(f"{key}: a value of {len(value):,} characters is not allowed "
                               f"(at most {MAX_VALUE_CHARS:,})")
            if flag["positional"]:
                positional.append(self._name_or_upload(key, value))
            elif flag["type"] == "bool":
                word = value.strip().lower()
                if word in TRUE_WORDS:
                    options.append(f"--{key}")
                elif word not in FALSE_WORDS:
                    raise ApiError(f"{key}={value!r} is not allowed: true or false (a switch)")
            else:
                if key == "gpu":
                    value = self._name_or_upload(key, value)
                options.append(f"--{key}={value}")
        as_json = ["--json"] if "--json" in self.commands[command]._option_string_actions else []
        return [command, *positional, *options, *as_json]

    def _name_or_upload(self, key: str, value: str) -> str:
        """A catalog name, or an uploaded config's token; never a path on the server."""
        if value.startswith(UPLOAD_PREFIX):
            path = self.uploads.get(value[len(UPLOAD_PREFIX):])
            if path is None:
                raise ApiError(f"{key}={value!r} is not allowed: an upload token from POST "
                               "/api/config (this one is unknown or expired)")
            return path
        if value.startswith("-") or _looks_like_path(value):
            raise ApiError(f"{key}={value[:60]!r} is not allowed: a catalog name (the server "
                           "reads no files; upload a config.json with POST /api/config)")
        return value

    def run(self, command: str, query: list[tuple[str, str]]) -> Answer:
        """The command's answer; a refusal in the language the query asks for (lang=zh)."""
        try:
            return self._cached(command, query)
        except ApiError as e:
            lang = dict(query).get("lang", "en")
            if lang != "en":
                from llmsizer.i18n import translate_text

                e.message = translate_text(e.message, lang)
            raise

    def _cached(self, command: str, query: list[tuple[str, str]]) -> Answer:
        argv = self.argv(command, query)
        key = tuple(argv)
        with self.cache_lock:
            hit = self.cache.get(key)
            if hit is not None:
                self.cache.move_to_end(key)
                return hit
        if command in SERIAL_COMMANDS:
            with self.serial_lock:
                answer = self._run(argv)
        else:
            answer = self._run(argv)  # concurrently with other requests
        with self.cache_lock:
            self.cache[key] = answer
            while len(self.cache) > 256:
                self.cache.popitem(last=False)
        return answer

    def _run(self, argv: list[str]) -> Answer:
        from llmsizer import cli

        try:
            args = self.parser.parse_args(argv)
        except _ParseExit as e:
            raise ApiError(self._unpath(e.message.removeprefix("llmsizer: error: "))) from None
        cli.NOTES.clear()
        try:
            with memo.active():
                out = cli.COMMANDS[args.command](args)
        except LlmsizerError as e:
            msg = cli.user_message(e, set(self.commands[args.command]._option_string_actions))
            raise ApiError(self._unpath(msg)) from None
        except ImpossibleResultError as e:
            raise ApiError(f"internal check failed: {e} (a bug in llmsizer; please report it "
                           "with the query)", 500) from None
        finally:
            notes = tuple(cli.NOTES)
            cli.NOTES.clear()
        if isinstance(out, str):
            out = cli.Outcome(out)
        return Answer(out.text, out.status, tuple(self._unpath(n) for n in notes))

    def upload(self, body: bytes, folder: str) -> dict[str, Any]:
        """Check an uploaded config.json through the project's file reader; a token for it.

        The bytes go to a file named by their hash in the server's own temporary folder, then
        through `get_model` (llmsizer.files: size, UTF-8, depth, strict JSON, the model schema,
        then the config readers); a refusal removes the file and names no server path."""
        import hashlib
        import os

        from llmsizer.catalog import get_model

        token = hashlib.sha256(body).hexdigest()[:24]
        path = os.path.join(folder, token + ".json")
        with self.upload_lock:
            if token not in self.uploads:
                with open(path, "wb") as f:
                    f.write(body)
                try:
                    spec = get_model(path)
                except LlmsizerError as e:
                    os.unlink(path)
                    raise ApiError(str(e).replace(path, "config.json")) from None
                while len(self.uploads) >= 256:  # oldest first
                    old = next(iter(self.uploads))
                    with contextlib.suppress(OSError):
                        os.unlink(self.uploads.pop(old))
                self.uploads[token] = path
            else:
                spec = get_model(path)
        return {"model": UPLOAD_PREFIX + token, "name": spec.name,
                "num_layers": spec.num_layers, "hidden_size": spec.hidden_size}

    def _unpath(self, message: str) -> str:
        """Messages name an uploaded config by its token, not by the server's temporary path."""
        for token, path in list(self.uploads.items()):  # a snapshot: uploads may arrive meanwhile
            message = message.replace(path, UPLOAD_PREFIX + token)
        return message


def _looks_like_path(value: str) -> bool:
    from llmsizer.files import is_directory, is_existing_path

    return (value.endswith(".json") or "\\" in value or value.startswith((".", "/", "~"))
            or ".." in value or "\0" in value or is_existing_path(value) or is_directory(value))


# ---------------------------------------------------------------------------------------------
# Schema: read off the argparse definitions
# ---------------------------------------------------------------------------------------------

_TYPE_NAMES = {"arg_int": "int", "arg_length": "length", "arg_float": "float",
               "arg_count": "count", "_rate": "float", "parse_seconds": "duration"}


def _type_name(action: argparse.Action) -> str:
    if action.nargs == 0:
        return "bool"
    kind = action.type
    if kind is None or kind is str:
        return "string"
    if kind in (int, float):
        return kind.__name__
    qual = getattr(kind, "__qualname__", "")
    return _TYPE_NAMES.get(qual.split(".")[0], "string")


def _name(action: argparse.Action) -> str:
    if not action.option_strings:
        return str(action.dest)
    longest = max(action.option_strings, key=len)
    return longest.lstrip("-")


def command_schema(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Every flag of one command: name, type, default, choices, help, required, exclusive group."""
    groups = {}
    for i, group in enumerate(parser._mutually_exclusive_groups):
        for action in group._group_actions:
            groups[id(action)] = i
    flags = []
    for action in parser._actions:
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        name = _name(action)
        default = action.default
        if default is argparse.SUPPRESS:
            default = None
        flags.append({
            "name": name, "positional": not action.option_strings,
            "type": _type_name(action),
            "default": default if isinstance(default, (str, int, float, bool, type(None)))
            else str(default),
            "choices": list(action.choices) if action.choices else None,
            "help": " ".join((action.help or "").split()),
            "required": bool(action.required), "group": groups.get(id(action)),
            "web": name not in SERVER_ONLY_FLAGS,
        })
    return {"help": " ".join((parser.description or "").split()), "flags": flags}
