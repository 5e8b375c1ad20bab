"""Progress events of a long run, as JSON lines, and the stop request.

Every long run (download, distill, quantize) reports through an `Events` sink. The CLI
echoes events to the console; a background job (qtinker.jobs) gives the run an events
file and a stop file, and the UI reads the file to show live state. One event per line:

    {"type": "progress", "time": 1732850000.1, "step": 10, "total": 300, ...}

Types used: "start", "progress", "eval", "log", "warning", "done" (with the result),
"stopped" (the user's Stop was honoured), "error" (with a one-line message). A run that ends
without "done" did not succeed.

Stop: every long loop (teacher fine-tuning, teacher-output cache, evaluation, the student loop,
latency measurements, downloads) checks the stop file once per batch / step / chunk through
`Events.check_stop()` or `stoppable(...)`, so Stop takes effect within about one step. It raises
`Stopped`, which the run's top level turns into a clean "stopped" end that keeps what can be resumed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, TypeVar

from qtinker.core.errors import QTinkerError

T = TypeVar("T")


class Stopped(QTinkerError):
    """The user asked the run to stop (the stop file exists). A QTinkerError, so anything that does not
    handle it ends as one line; runs that can continue later catch it at their top level."""


class Events:
    """Append-only JSON-lines sink; `echo` also prints a human line to stderr."""

    def __init__(self, path: str | Path | None = None, echo: bool = True, stop_file: str | Path | None = None):
        self.path = Path(path) if path else None
        self.echo = echo
        self.stop_file = Path(stop_file) if stop_file else None
        self._console: Console | None = None  # made at the first echo: bars only when stderr is a terminal
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, type: str, **fields: Any) -> None:
        event = {"type": type, "time": round(time.time(), 3), **fields}
        if self.path:
            try:
                with self.path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps(event, default=str) + "\n")
            except OSError:  # a full disk must not turn the run's one-line error into a traceback here
                pass
        if self.echo:
            if self._console is None:
                self._console = Console(bars=sys.stderr.isatty())
            self._console.show(event)

    def log(self, message: str) -> None:
        self.emit("log", message=message)

    def stop_requested(self) -> bool:
        """True once someone (the UI's Stop, a user) created the stop file."""
        return bool(self.stop_file and self.stop_file.exists())

    def check_stop(self, message: str = "stopped on request") -> None:
        """Raise `Stopped(message)` once a stop was requested (the run's top level emits the "stopped"
        event, saying how to continue). A stat() per call: cheap enough for once per batch."""
        if self.stop_requested():
            raise Stopped(message)


def stoppable(items: Iterable[T], events: "Events | None", message: str = "stopped on request") -> Iterator[T]:
    """`items`, checking for a stop request before each one: `for batch in stoppable(batches, events): ...`."""
    for item in items:
        if events is not None:
            events.check_stop(message)
        yield item


def read_events(path: str | Path) -> list[dict]:
    """All events written so far (a partly written last line is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def _human(event: dict) -> str:
    kind = event["type"]
    if kind == "log":
        return event.get("message", "")
    if kind == "error":
        return f"failed: {event.get('message', '')}"
    fields = ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("type", "time", "result"))
    return f"[{kind}] {fields}"


# what a bar is called for each stage that counts steps (stage None: the student's training loop)
BAR_NAMES = {"teacher": "fine-tuning the teacher", "teacher-cache": "caching teacher outputs", None: "training the student"}
QUANTIZE_STAGES = ("measure-float", "quantize", "measure-quantized", "save")


class Console:
    """The CLI's echo on stderr. On a terminal (`bars`), events that count steps (teacher fine-tuning, the
    teacher cache, the student's training) and quantize's stages move a tqdm bar, and every other event is a
    line printed above it (downloads keep the Hub's own bars); elsewhere (a log file, a pipe) each event is
    one line, as before. The JSON events are the same either way."""

    def __init__(self, bars: bool):
        self.bars, self.bar, self.key = bars, None, None

    def show(self, event: dict) -> None:
        spec = _bar_spec(event) if self.bars else None
        if spec is None:
            if self.bar is not None and event["type"] in ("done", "error", "stopped"):
                self.close(finished=event["type"] == "done")
            if self.bar is not None:
                self.bar.write(_human(event), file=sys.stderr)
            else:
                print(_human(event), file=sys.stderr, flush=True)
            return
        key, n, total, unit, postfix = spec
        if key != self.key:
            from tqdm import tqdm

            self.close(finished=True)  # the next stage began: the last one is over (its last step is not always sent)
            stages = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"  # a rate in stages/s says nothing
            self.bar, self.key = tqdm(total=total, initial=n, desc=key, unit=unit, file=sys.stderr, dynamic_ncols=True,
                                      bar_format=stages if unit == "stage" else None), key  # initial: a resumed run
        self.bar.total, self.bar.n = total, n  # events carry the absolute step: set, not update()
        self.bar.set_postfix_str(postfix, refresh=False)
        self.bar.refresh()

    def close(self, finished: bool = False) -> None:
        if self.bar is not None:
            if finished and self.bar.total:
                self.bar.n = self.bar.total
            self.bar.close()
        self.bar, self.key = None, None


def _bar_spec(event: dict) -> tuple[str, int, int | None, str, str] | None:
    """(bar name, done, total, unit, postfix) for an event a bar shows, else None."""
    if event["type"] != "progress":
        return None
    stage = event.get("stage")
    if stage in QUANTIZE_STAGES:
        return "quantize", QUANTIZE_STAGES.index(stage), len(QUANTIZE_STAGES), "stage", f"{stage}: {event.get('message', '')}"
    if "step" in event and "total_steps" in event and stage in BAR_NAMES:
        said = [f"epoch {event['epoch']}/{event['epochs']}" if event.get("epochs") else "",
                f"loss {event['loss']:.4g}" if isinstance(event.get("loss"), (int, float)) else ""]
        return BAR_NAMES[stage], int(event["step"]), int(event["total_steps"]), "step", ", ".join(x for x in said if x)
    return None
