"""``ugw targets``: the operator's command line for the registry, a client of a running gateway's admin API.

It holds no state and imports nothing of the server's runtime: every subcommand is one or a few admin requests,
validated with the same pydantic models the API uses, so a typo in a flag fails here with the API's own message.
Output is a table for people or ``--json`` for scripts; any failure exits non-zero with one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ValidationError

from server.registry.models import ElicitedList, JobRecord, TargetCreate, TargetList, TargetPublic, TargetUpdate

DEFAULT_URL = "http://127.0.0.1:8000"
_TERMINAL = ("active", "failed", "disabled")


class CLIError(Exception):
    """One line for stderr; the command exits 1."""


class AdminClient:
    def __init__(self, url: str, token: str | None, timeout: float = 60.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url + "/admin", headers=headers, timeout=timeout)

    def request(self, method: str, path: str, body: BaseModel | dict[str, Any] | None = None) -> Any:
        payload = body.model_dump(exclude_none=True) if isinstance(body, BaseModel) else body
        try:
            response = self.http.request(method, path, json=payload)
        except httpx.HTTPError as exc:
            raise CLIError(f"cannot reach {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise CLIError(f"{response.status_code} {_error_message(response)}")
        return response.json() if response.content else None

    def target(self, target_id: str) -> TargetPublic:
        return TargetPublic.model_validate(self.request("GET", f"/targets/{target_id}"))

    def wait(self, record: TargetPublic, timeout: float, progress: bool) -> TargetPublic:
        """Poll the build job until the target settles, drawing its progress on stderr."""
        from server.progress import progress_bar

        bar = progress_bar(100, record.name, unit="%", enabled=progress,
                           bar_format="{desc}: {percentage:3.0f}%|{bar}| {postfix}")
        deadline = time.monotonic() + timeout
        try:
            while True:
                record = self.target(record.id)
                job = JobRecord.model_validate(self.request("GET", f"/jobs/{record.job_id}")) \
                    if record.job_id else None
                if job is not None:
                    bar.n = round(job.progress * 100)
                    bar.set_postfix_str(job.message or job.state, refresh=True)
                # the record turns active a moment before its job is marked done
                if record.status in _TERMINAL and (job is None or job.state != "running"):
                    return record
                if time.monotonic() > deadline:
                    raise CLIError(f"{record.id} still {record.status} after {timeout:.0f} s")
                time.sleep(0.5)
        finally:
            bar.close()


def _error_message(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return str(error.get("message") or error)
    except (ValueError, KeyError, TypeError):
        return response.text.strip()[:200] or response.reason_phrase


def read_documents(paths: Sequence[str]) -> list[str]:
    """A text file is one document; a JSON file holding a list of strings is one document per item."""
    documents: list[str] = []
    for name in paths:
        path = Path(name)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CLIError(f"cannot read {name}: {exc}") from exc
        if path.suffix == ".json":
            try:
                items = json.loads(text)
            except json.JSONDecodeError as exc:
                raise CLIError(f"{name}: not JSON ({exc})") from exc
            if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
                raise CLIError(f"{name}: a JSON documents file holds a list of strings")
            documents += items
        else:
            documents.append(text)
    return documents


def _table(records: Sequence[TargetPublic]) -> str:
    rows = [("ID", "NAME", "STATUS", "ENABLED", "METHODS", "DOCUMENTS")]
    rows += [(r.id, r.name, r.status, "yes" if r.enabled else "no", ",".join(r.methods),
              str(r.documents.count if r.documents else 0)) for r in records]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _show(record: TargetPublic) -> str:
    lines = [f"{'id':<12}{record.id}", f"{'name':<12}{record.name}", f"{'status':<12}{record.status}"
             + (f" ({record.status_reason})" if record.status_reason else ""),
             f"{'enabled':<12}{'yes' if record.enabled else 'no'}", f"{'methods':<12}{', '.join(record.methods)}"]
    if record.aliases:
        lines.append(f"{'aliases':<12}{', '.join(record.aliases)}")
    if record.description:
        lines.append(f"{'description':<12}{record.description}")
    if record.documents:
        lines.append(f"{'documents':<12}{record.documents.count} ({record.documents.bytes} bytes)")
    lines += [f"{'built':<12}{', '.join(record.built)}",
              f"{'thresholds':<12}" + (", ".join(f"{k}={v:.4g}" for k, v in sorted(record.thresholds.items())) or "-")]
    return "\n".join(lines)


def _elicited(listed: ElicitedList) -> str:
    lines = [f"[{i}] {d.question}\n    {' '.join(d.answer.split())}\n    facts: {', '.join(d.facts) or '-'}"
             for i, d in enumerate(listed.data)] or ["no elicited documents (not built yet, or elicitation is off)"]
    if listed.described:
        own = [e for e, tied in listed.described.items() if tied]
        lines.append("the target's own (the model's description names it): " + (", ".join(own) or "-"))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    client = AdminClient(args.url, os.environ.get("UGW_ADMIN_TOKEN"))
    out: Any
    if args.action == "add":
        try:
            body = TargetCreate(name=args.name, aliases=args.alias, description=args.description or "",
                                methods=args.methods.split(","), forbidden_terms=args.forbidden_term,
                                documents=read_documents(args.documents))
        except ValidationError as exc:
            raise CLIError(_validation_line(exc)) from exc
        record = TargetPublic.model_validate(client.request("POST", "/targets", body))
        if args.wait:
            record = client.wait(record, args.timeout, progress=not args.json)
            if record.status == "failed":
                raise CLIError(f"{record.id} failed: {record.status_reason}")
        out = record
    elif args.action == "list":
        out = TargetList.model_validate(client.request("GET", "/targets"))
    elif args.action == "show":
        out = client.target(args.id)
    elif args.action == "elicited":
        if args.drop:
            listed = ElicitedList.model_validate(client.request("GET", f"/targets/{args.id}/elicited"))
            try:
                questions = [listed.data[i].question for i in args.drop]
            except IndexError as exc:
                raise CLIError(f"--drop takes the numbers `ugw targets elicited {args.id}` shows "
                               f"(0..{len(listed.data) - 1})") from exc
            current = client.target(args.id).dropped_elicited
            client.request("PATCH", f"/targets/{args.id}", TargetUpdate(dropped_elicited=[*current, *questions]))
        out = ElicitedList.model_validate(client.request("GET", f"/targets/{args.id}/elicited"))
    elif args.action in ("enable", "disable"):
        out = TargetPublic.model_validate(client.request(
            "PATCH", f"/targets/{args.id}", TargetUpdate(enabled=args.action == "enable")))
    elif args.action == "rm":
        client.request("DELETE", f"/targets/{args.id}")
        out = {"id": args.id, "deleted": True}
    else:  # detect
        out = client.request("POST", "/detect", {"prompt": args.prompt})
    print(_render(out, args.json))
    return 0


def _render(out: Any, as_json: bool) -> str:
    if as_json:
        return out.model_dump_json(indent=2) if isinstance(out, BaseModel) else json.dumps(out, indent=2)
    if isinstance(out, TargetList):
        return _table(out.data)
    if isinstance(out, TargetPublic):
        return _show(out)
    if isinstance(out, ElicitedList):
        return _elicited(out)
    if "deleted" in out:
        return f"deleted {out['id']}"
    detections = out["detections"]
    if not detections:
        return "no target detected"
    rows = [f"{d['target_id']}  {d['detector']:<10} score={d['score']:.3f}  {'FLAGGED' if d['flagged'] else '-'}"
            for d in detections]
    return "\n".join(rows)


def _validation_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "input"
    return f"{where}: {first['msg']}" + (f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else "")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    targets = sub.add_parser("targets", help="manage forget targets on a running gateway (its admin API)")
    targets.add_argument("--url", default=os.environ.get("UGW_URL", DEFAULT_URL),
                         help=f"the gateway (default env UGW_URL or {DEFAULT_URL}); the token is env UGW_ADMIN_TOKEN")
    targets.add_argument("--json", action="store_true", help="print the API's JSON instead of a table")
    actions = targets.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="register a target (builds its detectors and methods)")
    add.add_argument("name")
    add.add_argument("--alias", action="append", default=[], help="another name for it (repeatable)")
    add.add_argument("--description", default=None)
    add.add_argument("--documents", nargs="+", default=[], metavar="FILE",
                     help="text files (one document each) or JSON files with a list of documents")
    add.add_argument("--methods", default="eco", help="comma-separated: eco,o3,guard (default eco)")
    add.add_argument("--forbidden-term", action="append", default=[], help="a term GUARD forbids (repeatable)")
    add.add_argument("--wait", action="store_true", help="wait for the build, with a progress bar on stderr")
    add.add_argument("--timeout", type=float, default=1800.0, help="--wait: give up after this many seconds")
    actions.add_parser("list", help="every target, one row each")
    for action, text in (("show", "one target in full"), ("enable", "enforce it again"),
                         ("disable", "stop enforcing it, keeping everything built"), ("rm", "delete it")):
        actions.add_parser(action, help=text).add_argument("id")
    shown = actions.add_parser("elicited", help="what the served model said about it at the build (numbered)")
    shown.add_argument("id")
    shown.add_argument("--drop", type=int, action="append", default=[], metavar="N",
                       help="remove answer N (its question is not asked again; the target rebuilds)")
    detect = actions.add_parser("detect", help="which targets the detectors see in a prompt")
    detect.add_argument("prompt")
    targets.set_defaults(func=main_targets)


def main_targets(args: argparse.Namespace) -> int:
    try:
        return run(args)
    except CLIError as exc:
        print(f"ugw targets: error: {exc}", file=sys.stderr)
        return 1
