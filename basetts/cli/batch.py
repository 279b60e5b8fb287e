"""`basetts batch`: a file of texts (lines, JSON Lines or CSV) rendered to files, resumable through a manifest."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from ..errors import OutputError
from .common import (
    _Failed,
    _local_server,
    _synthesizer,
    _Usage,
)


# --- basetts batch: inputs, file names, the manifest -----------------------------------------------------
@dataclasses.dataclass
class Job:
    """One line of a batch's input: what to say and where, or why it cannot be (`problem`)."""

    line: int
    id: str
    text: str = ""
    settings: Dict[str, Any] = dataclasses.field(default_factory=dict)
    problem: Optional[str] = None

    @property
    def key(self) -> str:
        """A hash of the text and its settings: a finished file is redone when either changed."""
        import hashlib
        import json

        blob = json.dumps([self.text, self.settings], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def input_kind(path: str, given: Optional[str] = None) -> str:
    """text (one utterance per line), jsonl or csv: as given, or by the file's extension."""
    if given:
        return given
    lowered = path.lower()
    return "jsonl" if lowered.endswith((".jsonl", ".ndjson")) else "csv" if lowered.endswith(".csv") else "text"


class BadHeader(ValueError):
    """A CSV header that makes every row a bad line: said once, before any row is read."""


class NoTextColumn(BadHeader):
    """A CSV input whose header has no `text` column (args[0]: the columns it has)."""


class UnknownColumns(BadHeader):
    """A CSV column that is neither `id`, `text`, a setting nor yours (`_`-prefixed); args[0] names them."""


def read_jobs(lines: Iterable[str], kind: str, skipped: Optional[list] = None) -> Iterator[Job]:
    """The jobs of an input, lazily. Blank lines are skipped (their numbers appended to `skipped`); a line
    that cannot be a job (not JSON, no text, an unknown setting, a repeated id) is a Job with a `problem`; a field
    or column whose name starts with `_` is the user's and left out (as in `synthesize_many`). A CSV whose header
    has no text column, or a column that is not a setting, raises a `BadHeader` before the first job."""
    import csv
    import json

    from ..settings import CallSettings, unknown_settings

    known = set(CallSettings.__annotations__)
    seen: Set[str] = set()
    rows: Iterator[Tuple[int, Any]]
    if kind == "csv":
        reader = csv.DictReader(lines, skipinitialspace=True)
        if reader.fieldnames is not None and "text" not in reader.fieldnames:
            raise NoTextColumn(list(reader.fieldnames))
        unknown = unknown_settings([name for name in reader.fieldnames or () if not name.startswith("_")],
                                   known | {"id", "text"})
        if unknown is not None:
            raise UnknownColumns(unknown)
        rows = ((reader.line_num, row) for row in reader)
    else:
        rows = enumerate(lines, 1)
    for number, row in rows:
        if kind == "text":
            text = str(row).strip()
            if not text:
                if skipped is not None:
                    skipped.append(number)
                continue
            job = Job(number, f"{number:06d}", text)
        else:
            if kind == "csv" and None in row:  # more values than the header has names
                yield Job(number, str(row.get("id") or f"{number:06d}"),
                          problem=f"line {number} has {len(row) - 1 + len(row[None])} values "
                          f"where the header names {len(row) - 1} (a comma in a text? put the text in double quotes)")
                continue
            if kind == "jsonl":
                if not str(row).strip():
                    if skipped is not None:
                        skipped.append(number)
                    continue
                try:
                    row = json.loads(row)
                except ValueError as exc:
                    yield Job(number, f"{number:06d}", problem=f"line {number} is not JSON ({exc})")
                    continue
                if not isinstance(row, dict):
                    yield Job(number, f"{number:06d}", problem=f"line {number} is not a JSON object")
                    continue
            fields = {k: v for k, v in row.items()
                      if (v not in (None, "") or k == "text") and not str(k).startswith("_")}
            ident = str(fields.pop("id", "") or f"{number:06d}")
            text = fields.pop("text", None)
            if not isinstance(text, str) or not text.strip():
                if kind == "csv" and not any(fields.values()) and not text:
                    if skipped is not None:
                        skipped.append(number)
                    continue
                where = "" if "text" in row else f' (no "text" field; it has: {", ".join(row) or "none"})'
                yield Job(number, ident, problem=f"line {number} has no text{where}")
                continue
            unknown = unknown_settings(fields, known)
            if unknown is not None:
                yield Job(number, ident, text, problem=f"line {number}: unknown setting(s) {unknown}")
                continue
            job = Job(number, ident, text, fields)
        if job.id in seen:
            yield dataclasses.replace(job, problem=f"line {number}: id {job.id!r} was used before")
            continue
        seen.add(job.id)
        yield job


def file_name(ident: str, extension: str) -> str:
    """A safe file name for an id: the id itself if it is short and plain, else a hash of it."""
    import hashlib
    import re

    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", ident) and not ident.endswith("."):
        return ident + extension
    return hashlib.sha256(ident.encode("utf-8")).hexdigest()[:24] + extension


def read_manifest(path: str) -> Dict[str, Dict[str, Any]]:
    """The last entry for each id in a manifest (one JSON object per line); {} if there is none."""
    import json

    entries: Dict[str, Dict[str, Any]] = {}
    try:
        with open(path, encoding="utf-8") as file:
            for line in file:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if isinstance(entry, dict) and "id" in entry:
                    entries[str(entry["id"])] = entry
    except FileNotFoundError:
        pass
    return entries


def _batch(args: argparse.Namespace) -> int:
    """basetts batch INPUT OUTDIR: one file per item, a manifest, resumable, honest about failures."""
    import json

    from ..formats import AudioWriter, format_of

    extension = format_of("item." + args.format)
    outdir = os.path.abspath(args.outdir)
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise _Usage(f"OUTDIR {args.outdir} is a file, not a folder")
    try:
        os.makedirs(outdir, exist_ok=True)
    except OSError as exc:
        raise _Usage(f"OUTDIR {args.outdir}: cannot create it ({exc.strerror})") from None
    if not os.access(outdir, os.W_OK):
        raise _Usage(f"OUTDIR {args.outdir} is not writable")
    if args.input == "-":
        source: Any = sys.stdin
    else:
        try:
            source = open(args.input, encoding="utf-8", newline="")
        except OSError as exc:
            raise _Usage(f"INPUT {args.input}: cannot read it ({exc.strerror})") from None
    kind = input_kind(args.input, args.input_format)
    manifest_path = os.path.join(outdir, "manifest.jsonl")
    before = read_manifest(manifest_path)
    skipped_blank: List[int] = []
    counts = {"done": 0, "skipped": 0, "failed": 0, "bad": 0}
    synth = _synthesizer(args, args.url, None) if not args.local else None
    with contextlib.ExitStack() as stack:
        if source is not sys.stdin:
            stack.enter_context(source)
        manifest = stack.enter_context(open(manifest_path, "a", encoding="utf-8"))
        if synth is None:

            server = stack.enter_context(_local_server(args))
            synth = _synthesizer(args, server.url, server.api_key)

        def note(entry: Dict[str, Any]) -> None:
            manifest.write(json.dumps(entry, ensure_ascii=False) + "\n")
            manifest.flush()

        def todo() -> Iterator[Dict[str, Any]]:
            """The jobs still to do, as items for synthesize_many; the others are noted or skipped."""
            for job in read_jobs(source, kind, skipped_blank):
                name = file_name(job.id, extension)
                if job.problem is not None:
                    counts["bad"] += 1
                    note({"id": job.id, "line": job.line, "error": job.problem})
                    continue
                last = before.get(job.id)
                if (last and last.get("error") is None and last.get("text_sha256") == job.key
                        and os.path.exists(os.path.join(outdir, name))):
                    counts["skipped"] += 1
                    continue
                yield {"text": job.text, **job.settings, "id": job.id, "_job": job, "_file": name}

        total = None
        if source is not sys.stdin and sys.stderr.isatty():  # a total for the bar's ETA: one quick pass
            with open(args.input, encoding="utf-8", newline="") as counting:
                total = sum(1 for line in counting if line.strip()) - (kind == "csv")
        bar = _progress_bar(sys.stderr.isatty(), total)
        try:
            for result in synth.synthesize_many(todo(), concurrency=args.concurrency):
                job, name = result.item["_job"], result.item["_file"]
                entry: Dict[str, Any] = {"id": job.id, "line": job.line, "text_sha256": job.key, "file": name}
                if result.audio is not None:
                    temporary = os.path.join(outdir, f".{name}.partial")
                    try:
                        with AudioWriter(temporary, extension) as writer:
                            writer.write(result.audio.pcm)
                        os.replace(temporary, os.path.join(outdir, name))  # appears only when complete
                    except BaseException:
                        with contextlib.suppress(OSError):
                            os.remove(temporary)
                        raise
                    stats = result.audio.stats
                    entry.update(seconds=round(result.audio.duration, 3), first_audio=stats.first_byte_time,
                                 attempts=stats.attempts, error=None)
                    counts["done"] += 1
                else:
                    error = result.error
                    partial = getattr(error, "partial", None)
                    entry.update(seconds=None, attempts=getattr(getattr(partial, "stats", None), "attempts", None),
                                 error=f"{type(error).__name__}: {error}")
                    counts["failed"] += 1
                note(entry)
                bar.update(result)
        except KeyboardInterrupt:
            bar.close()
            print(f"basetts: stopped; {counts['done']} done, {counts['failed']} failed this run "
                  f"({counts['skipped']} already done). Run the same command again to go on.", file=sys.stderr)
            raise
        except OutputError as exc:  # a full disk: every item after it would fail the same way
            bar.close()
            raise _Failed(f"cannot write {name} in {outdir}: {exc.strerror}; {counts['done']} written this run "
                          f"({counts['skipped']} already done). Make room and run the same command again: what "
                          "is done is skipped") from exc
        except NoTextColumn as exc:
            bar.close()
            raise _Usage(f"INPUT {args.input}: its header has no \"text\" column (it has: {', '.join(exc.args[0])}); "
                         "the texts go in a column named text") from None
        except UnknownColumns as exc:
            bar.close()
            raise _Usage(f"INPUT {args.input}: its header has column(s) that are not settings: {exc.args[0]}; "
                         "a column of your own is left out when its name starts with _") from None
        except UnicodeDecodeError as exc:  # read as the texts are asked for: those before it are done
            bar.close()
            raise _Usage(f"INPUT {args.input} is not UTF-8 text (byte {exc.object[exc.start:exc.start + 1]!r} "
                         f"{exc.reason}); {counts['done']} written before it. Save it as UTF-8 and run the same "
                         "command again: what is done is skipped") from None
        bar.close()
    if not any(counts.values()):  # an empty input (a step before it failed?): nothing was asked, say so
        raise _Usage(f"INPUT {args.input} holds no texts ({len(skipped_blank)} blank line(s)): nothing to write")
    print(f"basetts: {counts['done']} written, {counts['skipped']} already done, {counts['failed']} failed, "
          f"{counts['bad']} bad input line(s), {len(skipped_blank)} blank line(s) skipped; manifest: "
          f"{manifest_path}", file=sys.stderr)
    return 1 if counts["failed"] or counts["bad"] else 0


class _NoBar:
    def update(self, result: Any) -> None:
        pass

    def close(self) -> None:
        pass


class _TqdmBar:
    """tqdm's bar: items, audio seconds, errors, rate, and the ETA when the total is known (not for stdin)."""

    def __init__(self, total: Optional[int]) -> None:
        from tqdm import tqdm  # type: ignore[import-untyped]

        self._bar = tqdm(unit="item", file=sys.stderr, dynamic_ncols=True, total=total)
        self._audio, self._errors = 0.0, 0

    def update(self, result: Any) -> None:
        self._audio += result.audio.duration if result.audio is not None else 0.0
        self._errors += result.error is not None
        self._bar.set_postfix(audio=f"{self._audio:.0f}s", errors=self._errors, refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def _progress_bar(terminal: bool, total: Optional[int] = None) -> Any:
    """tqdm's bar on a terminal (if tqdm is installed: the [batch] extra), else nothing."""
    if not terminal:
        return _NoBar()
    try:
        return _TqdmBar(total)
    except ImportError:
        return _NoBar()
