"""`auditor serve`: the store's audits, runs and reports over HTTP (Starlette), read-only.

The store is opened read-only (SQLite `mode=ro`): no route can change it. Bad requests get a
4xx with one line of text: an unknown run or audit 404, a malformed query 400, a file route
that leaves the results directory 404. The caller passes `summarize` (a store row -> the run
summary dict the pages take), so this module stays below the CLI layer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from store import RunRecord, Store
from ground.errors import AuditorError
from reports import charts
from reports import evaluation as cost_eval
from reports.comparison import templates as _env
from reports.comparison import latest_per_variant, render_comparison, render_overview
from reports.run_page import run_context

ID = re.compile(r"^[0-9A-Za-z-]{1,40}$")
STATUSES = ("ok", "mismatch", "failed", "crashed", "timeout", "interrupted", "pending", "running", "skipped",
            "compiled")
FILE_SUFFIXES = {".html": "text/html", ".svg": "image/svg+xml", ".png": "image/png", ".md": "text/plain",
                 ".txt": "text/plain", ".json": "application/json"}
# speedscope's release files (npm, MIT), installed by `make deps`; see vendor_dir()
SPEEDSCOPE = Path(__file__).resolve().parent / "vendor" / "node_modules" / "speedscope" / "dist" / "release"


def _bad(status: int, text: str):
    raise HTTPException(status_code=status, detail=text)


def _id(request: Request, name: str) -> str:
    value = request.path_params[name]
    if not ID.match(value):
        _bad(400, f"malformed {name}: {value!r}")
    return value


def create_app(results_dir: Path, summarize: Callable[[Store, RunRecord], dict]) -> Starlette:
    store = Store.read_only(results_dir)

    def summaries(rows) -> list[dict]:
        return [summarize(store, r) for r in rows]

    def one(lookup, value: str):
        try:
            return lookup(value)
        except AuditorError as e:
            _bad(404, str(e).replace(f" in {store.path}", ""))

    def page(name: str, **context) -> HTMLResponse:
        return HTMLResponse(_env.get_template(name).render(bundle=None, **context))

    def query(request: Request) -> dict:
        q = request.query_params
        unknown = set(q) - {"model", "compiler", "device", "status", "limit"}
        if unknown:
            _bad(400, f"unknown query parameter(s): {', '.join(sorted(unknown))}")
        if q.get("status") and q["status"] not in STATUSES:
            _bad(400, f"unknown status {q['status']!r} (one of {', '.join(STATUSES)})")
        try:
            limit = int(q.get("limit", "200"))
        except ValueError:
            _bad(400, f"limit must be a whole number, not {q['limit']!r}")
        if not 1 <= limit <= 100_000:
            _bad(400, "limit must be between 1 and 100000")
        return {"model": q.get("model") or None, "compiler": q.get("compiler") or None,
                "device": q.get("device") or None, "status": q.get("status") or None, "limit": limit}

    def filtered(f: dict) -> list[dict]:
        """The newest runs that pass the filters, up to the limit. Status, device and compiler
        are filtered by the store's query, and rows are decoded only as far as the page needs
        (decoding every run first cost 0.6 s of a 0.9 s page on 2,000 runs)."""
        out = []
        for row in store.iter_run_records(status=f["status"], device=f["device"], compiler=f["compiler"]):
            s = summarize(store, row)
            if f["model"] and f["model"] not in s["model"] and not s["model_hash"].startswith(f["model"]):
                continue
            out.append(s)
            if len(out) >= f["limit"]:
                break
        return out

    async def index(request: Request):
        f = query(request)
        runs = filtered(f)
        return page("serve_index.html.j2", runs=runs, audits=store.audits()[:50], f=f, statuses=STATUSES)

    async def api_runs(request: Request):
        f = query(request)
        return JSONResponse(json.loads(json.dumps(filtered(f), default=str)))

    async def overview(request: Request):
        rows = summaries(store.run_records())
        links = {s["model_hash"]: f"/model/{s['model_hash']}" for s in rows}
        return HTMLResponse(render_overview(store, rows, links, None, evaluation=cost_eval.load(store.dir)))

    async def evaluation(request: Request):
        """The cost model's evaluation alone (`auditor evaluate`'s export in the results dir)."""
        report = cost_eval.load(store.dir)
        if report is None:
            _bad(404, "no cost-model evaluation in the results directory (run `auditor evaluate`)")
        labels = {r["model_hash"]: r["source"] for r in store.models() if r["source"]}
        return page("serve_evaluation.html.j2", ev=cost_eval.context(report, labels))

    async def model(request: Request):
        model_hash = _id(request, "model_hash")
        rows = store.runs_where(model_hash=model_hash)
        if not rows:
            _bad(404, f"no model {model_hash!r} in the store")
        runs = latest_per_variant(summaries(rows))
        return HTMLResponse(render_comparison(store, runs, runs[0]["model"], None, served=True))

    async def audit(request: Request):
        a = one(store.audit, _id(request, "audit_id"))
        runs = summaries(store.runs_where(audit_id=a["audit_id"]))
        if not runs:
            _bad(404, f"audit {a['audit_id']} has no runs")
        return HTMLResponse(render_comparison(store, runs, f"audit {a['audit_id']}", None, served=True))

    async def run(request: Request):
        row = one(store.run_record, _id(request, "run_id"))
        return page("run.html.j2", **run_context(store, row["run_id"]))

    async def compare(request: Request):
        """?runs=A,B (two runs) or ?audits=A,B (two audits): one comparison page."""
        q = request.query_params
        if set(q) - {"runs", "audits"} or len(q) != 1:
            _bad(400, "give runs=ID,ID or audits=ID,ID")
        kind, ids = next(iter(q.items()))
        ids = [i for i in ids.split(",") if i]
        if len(ids) != 2 or not all(ID.match(i) for i in ids):
            _bad(400, f"{kind} needs two ids separated by a comma")
        if ids[0] == ids[1]:
            _bad(400, f"{kind}: give two different ids")
        picked = []
        if kind == "runs":
            for i in ids:
                s = summarize(store, one(store.run_record, i))
                picked.append({**s, "variant": f"{s['variant']} ({s['run_id'][:6]})"})
        else:
            audits = [one(store.audit, i) for i in ids]
            if audits[0]["audit_id"] == audits[1]["audit_id"]:
                _bad(400, "audits: give two different ids")
            for a in audits:
                picked += [{**s, "variant": f"{s['variant']} ({a['audit_id'][-6:]})"}
                           for s in summaries(store.runs_where(audit_id=a["audit_id"]))]
        title = " vs ".join(ids)
        return HTMLResponse(render_comparison(store, picked, title, None, served=True))

    async def progress(request: Request):
        return page("serve_progress.html.j2")

    async def api_progress(request: Request):
        """Runs not yet finished, and the newest audits with their runs counted by state."""
        active = store.runs_where(status=("pending", "running"))
        audits = []
        for a in store.audits()[:5]:
            counts: dict[str, int] = {}
            for r in store.runs_where(audit_id=a["audit_id"]):
                counts[r["status"]] = counts.get(r["status"], 0) + 1
            audits.append({"audit_id": a["audit_id"], "command": a["command"], "counts": counts})
        return JSONResponse({"active": [{"run_id": r["run_id"], "variant": r["variant"], "status": r["status"],
                                         "audit_id": r["audit_id"], "started_at": r["started_at"]} for r in active],
                             "audits": audits})

    async def vega(request: Request):
        return Response(charts.vega_bundle(), media_type="text/javascript",
                        headers={"Cache-Control": "max-age=86400"})

    async def files(request: Request):
        """A file the pages refer to, from inside the results directory only."""
        rel = request.path_params["path"]
        target = (store.dir / rel).resolve()
        if not target.is_relative_to(store.dir.resolve()) or target.suffix not in FILE_SUFFIXES \
                or not target.is_file():
            _bad(404, f"no such file: {rel}")
        return FileResponse(target, media_type=FILE_SUFFIXES[target.suffix])

    async def folded(request: Request):
        """A stored perf profile as folded stacks (what speedscope and flamegraph tools read)."""
        p = one(store.profile, _id(request, "profile_id"))
        text = "".join(f"{stack} {n}\n" for stack, n in sorted(p["folded"].items()))
        return PlainTextResponse(text)

    async def profile_view(request: Request):
        p = one(store.profile, _id(request, "profile_id"))
        return page("serve_profile.html.j2", p=p, speedscope=SPEEDSCOPE.is_dir())

    async def not_found(request: Request, exc: HTTPException):
        return PlainTextResponse(f"{exc.status_code}: {exc.detail}\n", status_code=exc.status_code)

    routes = [
        Route("/", index), Route("/api/runs", api_runs), Route("/overview", overview),
        Route("/evaluation", evaluation),
        Route("/model/{model_hash}", model), Route("/audit/{audit_id}", audit), Route("/run/{run_id}", run),
        Route("/compare", compare), Route("/progress", progress), Route("/api/progress", api_progress),
        Route("/assets/vega.js", vega), Route("/files/{path:path}", files),
        Route("/profile/{profile_id}", profile_view), Route("/profile/{profile_id}/folded", folded),
    ]
    if SPEEDSCOPE.is_dir():
        routes.append(Mount("/speedscope", StaticFiles(directory=SPEEDSCOPE, html=True)))

    async def internal(request: Request, exc: Exception):
        return PlainTextResponse(f"500: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}\n",
                                 status_code=500)

    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found, Exception: internal})
    app.state.store = store
    return app

