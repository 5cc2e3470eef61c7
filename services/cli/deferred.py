"""An argparse parser whose arguments may come from a module imported only when that command is used.

`isthmus --help` needs each command's name and one-line help, not its flags; a command that runs a
component (`isthmus proxy run`) should not import the other components to build its parser. A
`DeferredParser` created with `load=fn` calls fn(parser) once, before it first parses or prints help.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

Loader = Callable[[argparse.ArgumentParser], None]


class DeferredParser(argparse.ArgumentParser):
    def __init__(self, *args: Any, load: Loader | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._load = load

    def _complete(self) -> None:
        load, self._load = self._load, None
        if load is not None:
            load(self)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        self._complete()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self._complete()
        return super().format_usage()

    def format_help(self) -> str:
        self._complete()
        return super().format_help()
