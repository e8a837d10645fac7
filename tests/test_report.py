"""Comparison reports, the terminal verdict and `results list` filters, from real stored runs.

One small block audited once, as a user would (the installed console script, from a folder of
their own, default relative results directory): torch-eager matches (the reference), ONNX
Runtime is measured but mismatches at zero tolerance (GELU/LayerNorm/softmax round
differently), SOFIE fails (it has no Round). The pages are opened in headless Chromium
(Debian's, driven by Playwright): no console errors, no request but the page itself, charts
drawn, a screenshot written. One browser per module.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from reports.verdict import choose
from tests.test_user_path import CONSOLE_SCRIPT, user_env

CHROMIUM = Path("/usr/bin/chromium")

BLOCK = '''import torch
from torch import nn


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.LayerNorm(256), nn.Tanh(), nn.Softmax(-1))

    def forward(self, x):
        return self.body(x) * (1 + torch.round(x[:, :1]) * 1e-3)


def make():
    torch.manual_seed(0)
    return Block().eval(), (torch.randn(1, 64),)
'''


def auditor(home: Path, *args, expect: int = 0, timeout: float = 600):
    proc = subprocess.run([str(CONSOLE_SCRIPT), *map(str, args)], cwd=home, env=user_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == expect, f"auditor {args} -> {proc.returncode}\n{proc.stderr[-3000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return proc


def in_process(capsys, home: Path, *args, expect: int = 0) -> tuple[str, str]:
    """The CLI in this process (it imports torch once, not once per call): (stdout, stderr)."""
    from auditor.cli import main

    capsys.readouterr()
    cwd = os.getcwd()
    os.chdir(home)
    try:
        code = main([str(a) for a in args])
    finally:
        os.chdir(cwd)
    out, err = capsys.readouterr()
    assert code == expect, f"auditor {args} -> {code}\n{err[-3000:]}"
    return out, err


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """A user's folder with block.py audited there: (folder, compile-all stdout, runs by variant)."""
    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"no installed console script at {CONSOLE_SCRIPT}")
    folder = tmp_path_factory.mktemp("report-user")
    (folder / "block.py").write_text(BLOCK)
    out = auditor(folder, "compile-all", "block.py:make", "-c", "torch-eager,onnxruntime,sofie", "--runs", 100,
                  "--warmup", 5, "--profile-runs", 5, "--atol", 0, "--rtol", 0, "--deadline-us", 1e6).stdout
    from store import Store
    from auditor.summary import run_summary

    store = Store(folder / "auditor-results")
    runs = {r["variant"]: run_summary(store, r) for r in store.run_records()}
    store.close()
    assert {v: r["status"] for v, r in runs.items()} == {"torch-eager": "ok", "onnxruntime": "mismatch",
                                                         "sofie": "failed"}
    return folder, out, runs


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (make deps installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield b
        b.close()


def open_page(browser, url: str, shot: Path) -> tuple:
    """The page after its charts have drawn: (page, console errors, requested URLs)."""
    page = browser.new_page(viewport={"width": 1150, "height": 900})
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(url)
    page.wait_for_load_state("load")
    if page.locator("[data-spec]").count():
        page.wait_for_function("document.querySelectorAll('[data-spec]').length == "
                               "document.querySelectorAll('[data-spec] svg').length", timeout=20000)
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    return page, errors, requests


def chart_marks(page) -> dict[str, int]:
    """Chart id -> how many drawn marks (paths, lines, rects, symbols) its SVG holds."""
    return page.eval_on_selector_all(
        "[data-spec]", "els => Object.fromEntries(els.map(e => [e.id, "
        "e.querySelectorAll('svg path, svg line, svg rect, svg .mark-symbol path').length]))")


# -- the verdict, as a pure function ------------------------------------------------------

def _run(variant, status="ok", p50=10.0, p99=20.0, budget=100.0, emulated=False, reason="", **kw):
    return {"variant": variant, "status": status, "p50_us": p50, "p99_us": p99, "max_us": p99 and p99 * 2,
            "budget_us": budget, "emulated": emulated, "reason": reason,
            "accuracy_passed": int(status == "ok"), "max_abs_err": 0.0, **kw}


def test_verdict_picks_the_fastest_matching_variant_within_the_deadline():
    v = choose([_run("litert", p50=30, p99=40), _run("sofie", "mismatch", p50=5, p99=8, reason="output y: err"),
                _run("tvm", p50=20, p99=150), _run("iree", "failed", p50=None, p99=None, reason="compile: boom"),
                _run("ort", p50=35, p99=38)])
    assert v.winner == "litert"
    assert v.line.startswith("Use litert: fastest variant whose outputs match and whose p99 (40.0 µs) meets")
    assert "sofie is faster on the median (5.0 µs) but its outputs are wrong" in v.tradeoffs
    assert "tvm is faster on the median (20.0 µs) but its p99 (150 µs) misses the deadline" in v.tradeoffs
    assert "ort has the lower p99 (38.0 µs vs 40.0 µs)" in v.tradeoffs
    assert v.why["iree"] == "failed: compile: boom" and v.why["sofie"] == "outputs wrong: output y: err"
    assert v.why["tvm"] == "p99 150 µs misses the 100 µs deadline"
    assert v.why["ort"] == "slower: p50 35.0 µs vs 30.0 µs"


def test_verdict_never_judges_emulated_timings_and_quotes_rt_safety():
    v = choose([_run("tvm", emulated=True), _run("sofie", emulated=True, p50=5)])
    assert v.winner is None and v.emulated
    assert v.line.startswith("Emulated timings: no deadline verdict") and "sofie (5.0 µs median)" in v.line
    v = choose([_run("sofie", rt_safety={"verdict": "not real-time safe after warm-up: 2 allocations"})])
    assert v.winner == "sofie" and v.tradeoffs == [
        "its real-time safety audit: not real-time safe after warm-up: 2 allocations"]
    v = choose([_run("a", "mismatch", reason="output y: err"), _run("b", p99=500)])
    assert v.winner is None and v.line == ("No variant to use: a outputs wrong: output y: err; "
                                           "b p99 500 µs misses the 100 µs deadline.")


# -- the terminal ---------------------------------------------------------------------------

def test_compile_all_prints_the_verdict_above_a_100_column_table(home):
    folder, out, runs = home
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Use torch-eager: "))
    assert "onnxruntime is faster on the median" in " ".join(lines[start:start + 3])
    header = next(i for i, line in enumerate(lines) if line.startswith("variant "))
    assert header > start
    table = [line for line in lines[start:] if not line.startswith("results: ")]  # paths are as long as they are
    assert max(len(line) for line in table) <= 100, max(table, key=len)
    body = "\n".join(lines[header:])
    assert "sofie: failed: compile: " in body and "Round" in body  # the reason, shortened to fit
    assert runs["sofie"]["run_id"] in body


def test_results_list_names_the_model_and_filters(home, capsys):
    folder, _, runs = home
    text = auditor(folder, "results", "list").stdout
    assert text.splitlines()[0].split()[0] == "model" and text.count("block.py") == 3
    assert max(len(line) for line in text.splitlines()) <= 100

    def listed(*args):
        return json.loads(in_process(capsys, folder, "results", "list", "--json", *args)[0])

    only = listed("--status", "failed")
    assert [r["variant"] for r in only] == ["sofie"] and only[0]["model"] == "block.py"
    assert [r["variant"] for r in listed("--compiler", "onnxruntime")] == ["onnxruntime"]
    assert len(listed("--model", "block", "--device", "local")) == 3
    assert listed("--model", "nothing") == [] and listed("--device", "ssh://x") == []
    wide = in_process(capsys, folder, "results", "list", "--wide")[0]
    assert "SOFIE does not support ONNX operator Round" in wide  # --wide: the whole reason
    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(in_process(capsys, folder, "results", "export", "--csv")[0])))
    assert {r["model"] for r in rows} == {"block.py"} and {r["rt_verdict"] for r in rows} == {""}


# -- the pages ----------------------------------------------------------------------------

def test_report_page_in_a_browser(home, browser, tmp_path):
    folder, _, runs = home
    proc = auditor(folder, "report", "block.py", "--json")
    (page_info,) = json.loads(proc.stdout)["pages"]
    path = Path(page_info["path"])
    assert path.parent == folder / "auditor-results" / "reports"  # default: beside the store
    html = path.read_text()
    page, errors, requests = open_page(browser, path.as_uri(), tmp_path / "report.png")
    assert errors == [] and requests == [path.as_uri()]
    verdict = page.inner_text("#verdict")
    assert verdict.startswith("Use torch-eager: fastest variant whose outputs match") and "onnxruntime is faster on the median" in verdict
    rows = page.eval_on_selector_all("#comparison tbody tr", "rs => rs.map(r => r.innerText)")
    assert any(r.startswith("★ torch-eager") for r in rows)
    sofie = next(r for r in rows if r.startswith("sofie"))
    # failed variants are shown with their reason: cut in the table (whole in its title), whole above it
    assert "failed" in sofie and "compile: RuntimeError: SOFIE does not support" in sofie
    assert "Round" in page.get_attribute("#comparison tr.failed span.note", "title")
    assert "sofie: failed: compile: RuntimeError: SOFIE does not support ONNX operator Round" in page.inner_text("ul")
    assert "mismatch" in next(r for r in rows if r.startswith("onnxruntime"))
    marks = chart_marks(page)
    assert set(marks) == {"chart-dist", "chart-cdf", "chart-memory", "chart-top"}
    assert all(n > 5 for n in marks.values()), marks
    # per operator: one column per measured variant, each naming its instrument
    heads = page.eval_on_selector_all("#per-op thead th", "hs => hs.map(h => h.innerText)")
    assert any(h.startswith("onnxruntime") and "ort-profiler" in h for h in heads)
    assert any(h.startswith("torch-eager") and "fx-node-timer" in h for h in heads)
    assert "Round" in page.inner_text("#per-op")  # the canonical ONNX nodes are the rows
    # sorting by p50 puts the fastest measured variant first
    page.click("#comparison th:nth-child(3)")
    assert page.inner_text("#comparison tbody tr:first-child td:first-child") == "onnxruntime"
    assert "Environment" in html and runs["torch-eager"]["compiler_version"] in html
    # compile-all stored the cost model's forecast beside each matching measurement; the page
    # shows it apart, labelled as predicted (a mismatching variant gets none)
    assert runs["torch-eager"]["predicted"]["p50_us"] > 0 and runs["onnxruntime"]["predicted"] is None
    assert page.inner_text("#prediction tbody tr:first-child td:first-child") == "torch-eager"
    assert "PREDICTED by local.json" in page.inner_text("body")
    assert 0.9e6 < page_info["bytes"] < 3e6  # the vega bundle is most of it
    page.close()


def test_overview_page_in_a_browser(home, browser, tmp_path, capsys):
    folder, _, _ = home
    out = tmp_path / "pages"
    pages = json.loads(in_process(capsys, folder, "report", "--all", "--output", out, "--json")[0])["pages"]
    index = Path(pages[0]["path"])
    assert index == out / "index.html" and len(pages) == 2
    assert os.path.getsize(index) < 0.2e6  # pages of a set share one vega.js beside them
    page, errors, requests = open_page(browser, index.as_uri(), tmp_path / "overview.png")
    assert errors == [] and requests == [index.as_uri(), (out / "vega.js").as_uri()]
    assert "block.py" in page.inner_text("#models") and "torch-eager" in page.inner_text("#models")
    assert page.inner_text("#families").split("\n")[-1].split("\t") == ["files", "0/1", "0/1", "1/1"]
    assert "Round" in page.inner_text("#coverage")
    page.close()


SLICE = Path(__file__).resolve().parent / "data" / "costmodel-slice.parquet"  # 3 families x 8 graphs x 2 variants


def test_overview_shows_the_cost_model_evaluation_in_a_browser(home, browser, tmp_path, capsys):
    """`auditor evaluate` exports into the results dir; `report --all` then draws its
    predicted-vs-measured scatter and tables on the overview, from the export's own figures."""
    folder, _, _ = home
    results = folder / "auditor-results"
    in_process(capsys, folder, "evaluate", "--dataset", SLICE)
    report = json.loads((results / "cost-model-eval.json").read_text())
    out = tmp_path / "pages"
    pages = json.loads(in_process(capsys, folder, "report", "--all", "--output", out, "--json")[0])["pages"]
    index = Path(pages[0]["path"])
    assert os.path.getsize(index) < 0.1e6  # 48 points; vega.js stays beside the pages
    page, errors, requests = open_page(browser, index.as_uri(), tmp_path / "overview-evaluation.png")
    assert errors == [] and requests == [index.as_uri(), (out / "vega.js").as_uri()]
    held = {v: len(rows) for v, rows in report["held"].items()}
    assert held == {"onnxruntime": 24, "torchscript": 24}
    # two panels (p50, p99), each one drawn symbol per held-out graph and variant, its y = x
    # line and its band; one dataset feeds both
    assert page.locator("#chart-eval .mark-symbol.role-mark path").count() == 2 * 48
    assert page.locator("#chart-eval .mark-line path").count() == 2
    assert page.locator("#chart-eval .mark-area path").count() == 2
    axes = page.inner_text("#chart-eval")
    for which in ("p50", "p99"):
        assert f"predicted {which} (leave-one-family-out)" in axes and f"measured {which}, µs (log scale)" in axes
    spec = json.loads(page.inner_text("#spec-eval"))
    assert len(spec["datasets"]["pvm"]) == 48
    rows = page.eval_on_selector_all("#eval-variants tbody tr", "rs => rs.map(r => r.innerText.split('\\t'))")
    for row in rows:
        m = report["variants"][row[0]]["all"]
        assert row[1:4] == [str(m["graphs"]), f"{100 * m['p50']['within_10']:.0f}%", f"{100 * m['p50']['within_20']:.0f}%"]
        assert row[-1] == f"{100 * m['p99']['interval90_coverage']:.0f}%"
    assert sorted(r[0] for r in rows) == ["onnxruntime", "torchscript"]
    assert page.locator("#eval-families tbody tr").count() == 6  # 3 held-out families x 2 variants
    rk = report["ranking"]
    assert f"Ranking over {rk['graphs']} graphs" in page.inner_text("#eval-ranking")
    assert f"{100 * rk['best_hit']:.0f}%" in page.inner_text("#eval-ranking")
    # the tooltip names the family and the graph of the point under the pointer
    page.locator("#chart-eval .mark-symbol.role-mark path").first.hover(force=True)
    page.wait_for_selector("#vg-tooltip-element.visible", timeout=5000)
    tip = page.inner_text("#vg-tooltip-element")
    assert "family" in tip and "graph" in tip and any(h["family"] in tip for h in report["held"]["onnxruntime"])
    page.close()


def test_report_bad_input_is_one_line(home, capsys):
    folder, _, _ = home
    for args, text in [(["report"], "give one of MODEL"), (["report", "nosuch.py"], "no model or run 'nosuch.py'"),
                       (["report", "--audit", "zz"], "no audit 'zz'"),
                       (["report", "--all", "--results-dir", "empty"], "no results store in")]:
        _, err = in_process(capsys, folder, *args, expect=2)
        assert err.count("\n") == 1 and text in err, err


def test_serve_refuses_a_non_loopback_address_without_the_flag(home, capsys):
    folder, _, _ = home
    _, err = in_process(capsys, folder, "serve", "--host", "0.0.0.0", expect=2)
    assert err.count("\n") == 1 and "--allow-remote" in err
    from auditor.commands.serve import is_loopback

    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


def test_pages_keep_working_when_the_environment_says_no_network(home):
    """The page holds its JavaScript: nothing in it asks for a script, style or image elsewhere."""
    folder, _, _ = home
    html = next((folder / "auditor-results" / "reports").glob("compare-*.html")).read_text()
    import re

    assert not re.search(r"""<(script|link|img)[^>]+(src|href)=["']?(https?:)?//""", html)
    from reports.charts import vega_bundle

    # the run page carries the whole Vega bundle inline (its size was checked before: too close to call)
    run_page = next((folder / "auditor-results" / "reports").glob("run-*.html")).read_text()
    assert len(vega_bundle()) > 500_000 and vega_bundle() in run_page


# -- auditor serve ---------------------------------------------------------------------------
# In this module: the served pages read the audit above (an audit costs most of the time here).

FOLDED = {"main;infer;sgemm_kernel": 60, "main;infer;gelu": 25, "main;other": 15}


@pytest.fixture(scope="module")
def served(home):
    """A stored perf profile (synthetic stacks, stored by the store's own method) and a
    TestClient on the read-only app: (client, runs, profile id, results dir)."""
    from starlette.testclient import TestClient

    from store import Store
    from auditor.summary import run_summary
    from reports.server import create_app

    folder, _, runs = home
    results = folder / "auditor-results"
    store = Store(results)
    profile_id = store.add_profile(
        {"capture": {"command": "synthetic"}, "event": "cpu-clock", "frequency": 999, "samples": 100,
         "ms_per_sample": 1.001, "folded": FOLDED, "notes": ["synthetic stacks for the viewer test"],
         "functions": [{"function": "sgemm_kernel", "dso": "libopenblas", "self_samples": 60,
                        "total_samples": 60, "kernel": None, "onnx_nodes": []}],
         "threads": [{"comm": "python", "tid": 1, "samples": 100, "top_function": "sgemm_kernel"}],
         "kernels": []}, model_hash=runs["torch-eager"]["model_hash"], compiler="torch-eager", device="local")
    store.close()
    with TestClient(create_app(results, run_summary), raise_server_exceptions=False) as client:
        yield client, runs, profile_id, results


def test_serve_pages_and_json(served):
    client, runs, profile_id, _ = served
    eager, ort, sofie = runs["torch-eager"], runs["onnxruntime"], runs["sofie"]
    index = client.get("/")
    assert index.status_code == 200 and all(r["run_id"] in index.text for r in runs.values())
    failed = client.get("/api/runs", params={"status": "failed"}).json()
    assert [r["variant"] for r in failed] == ["sofie"] and failed[0]["model"] == "block.py"
    assert [r["variant"] for r in client.get("/api/runs", params={"compiler": "onnxruntime"}).json()] == ["onnxruntime"]
    assert len(client.get("/api/runs", params={"model": "block", "device": "local"}).json()) == 3
    assert client.get("/api/runs", params={"model": "other"}).json() == []
    # newest first, decoded only up to the limit
    (newest,) = client.get("/api/runs", params={"limit": 1}).json()
    assert newest["run_id"] == max(runs.values(), key=lambda r: r["started_at"])["run_id"]
    assert client.get("/api/runs", params={"status": "failed", "device": "ssh://x"}).json() == []
    model = client.get(f"/model/{eager['model_hash']}").text
    assert "<b>Use torch-eager</b>: fastest" in model and '<script src="/assets/vega.js">' in model
    assert "Round" in client.get(f"/audit/{eager['audit_id']}").text
    run = client.get(f"/run/{ort['run_id'][:8]}")  # a unique prefix is enough
    assert run.status_code == 200 and ort["run_id"] in run.text and "spec-hist" in run.text
    both = client.get("/compare", params={"runs": f"{eager['run_id']},{ort['run_id']}"}).text
    assert f"torch-eager ({eager['run_id'][:6]})" in both and f"onnxruntime ({ort['run_id'][:6]})" in both
    twice = client.get("/compare", params={"audits": f"{eager['audit_id']},{eager['audit_id'][:15]}"})
    assert twice.status_code == 400 and "two different" in twice.text  # one audit, named twice
    progress = client.get("/api/progress").json()
    assert progress["active"] == []
    assert progress["audits"][0]["counts"] == {"ok": 1, "mismatch": 1, "failed": 1}
    assert client.get("/assets/vega.js").text.startswith(("(", "var", "!", "/*", "const", "let", "import", "\""))
    assert client.get(f"/files/reports/run-{sofie['run_id']}.html").status_code == 200
    folded = client.get(f"/profile/{profile_id}/folded").text
    assert sorted(folded.splitlines()) == sorted(f"{k} {v}" for k, v in FOLDED.items())
    assert "sgemm_kernel" in client.get(f"/profile/{profile_id}").text


def test_serve_shows_the_cost_model_evaluation(served, capsys):
    client, _, _, results = served
    in_process(capsys, results.parent, "evaluate", "--dataset", SLICE)  # exports into the results dir
    report = json.loads((results / "cost-model-eval.json").read_text())
    page = client.get("/evaluation")
    assert page.status_code == 200 and '<script src="/assets/vega.js">' in page.text
    assert 'id="spec-eval"' in page.text and '"pvm":[' in page.text
    m = report["variants"]["onnxruntime"]["all"]["p50"]
    assert f'<td data-v="{m["within_10"]}">{100 * m["within_10"]:.0f}%</td>' in page.text
    assert 'href="/evaluation"' in client.get("/").text and 'id="eval-variants"' in client.get("/overview").text
    moved = results / "cost-model-eval.json.moved"
    (results / "cost-model-eval.json").rename(moved)
    try:
        gone = client.get("/evaluation")
        assert gone.status_code == 404 and "run `auditor evaluate`" in gone.text
        assert 'id="eval-variants"' not in client.get("/overview").text
    finally:
        moved.rename(results / "cost-model-eval.json")


def test_serve_shows_a_running_compile_all_live(tmp_path):
    """A real compile-all writes a fresh store while serve's app reads it: /api/progress shows
    its audit with a run pending or running, then every run finished with its stored status."""
    import time

    from starlette.testclient import TestClient

    from auditor.summary import run_summary
    from ground.errors import AuditorError
    from reports.server import create_app

    if not CONSOLE_SCRIPT.exists():
        pytest.skip(f"no installed console script at {CONSOLE_SCRIPT}")
    results = tmp_path / "live-results"
    model = Path(__file__).resolve().parent.parent / "examples" / "blocks.py"
    args = ["compile-all", f"{model}:mlp", "-c", "onnxruntime", "-c", "torch-eager", "--runs", 10**9,
            "--max-seconds", 2, "--warmup", 5, "--profile-runs", 5, "--results-dir", results, "--json"]
    proc = subprocess.Popen([str(CONSOLE_SCRIPT), *map(str, args)], cwd=tmp_path, env=user_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = []  # /api/progress answers that showed a run not yet finished
    try:
        deadline = time.monotonic() + 300
        app = None
        while app is None:  # the store appears once compile-all has opened it
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "compile-all made no store within 300 s"
            try:
                app = create_app(results, run_summary)
            except AuditorError:
                time.sleep(0.2)
        with TestClient(app, raise_server_exceptions=False) as client:
            while proc.poll() is None:
                assert time.monotonic() < deadline, "compile-all did not finish within 300 s"
                p = client.get("/api/progress").json()
                if p["active"]:
                    seen.append(p)
                time.sleep(0.2)
            out, err = proc.communicate()
            assert proc.returncode == 0, err[-3000:]
            final = client.get("/api/progress").json()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    runs = json.loads(out)["runs"]
    (audit_id,) = {r["audit_id"] for r in runs}
    assert sorted(r["variant"] for r in runs) == ["onnxruntime", "torch-eager"]
    assert seen, "no /api/progress answer showed a run pending or running"
    during = [r for p in seen for r in p["active"]]
    assert {r["audit_id"] for r in during} == {audit_id}
    assert {r["run_id"] for r in during} <= {r["run_id"] for r in runs}
    assert {r["status"] for r in during} <= {"pending", "running"}
    first = next(a for a in seen[0]["audits"] if a["audit_id"] == audit_id)
    assert first["counts"].get("pending", 0) + first["counts"].get("running", 0) >= 1
    assert final["active"] == []
    (done,) = [a for a in final["audits"] if a["audit_id"] == audit_id]
    counts: dict[str, int] = {}
    for r in runs:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    assert done["counts"] == counts == {"ok": 2} and "compile-all" in done["command"]


def test_serve_compares_two_audits_and_runs_of_different_audits(tmp_path, capsys):
    """Two real audits of one model (the second with ONNX Runtime only): /compare?audits=A,B
    shows every run of both, each labelled by its audit; /compare?runs=A,B two ONNX Runtime
    runs of different audits, each labelled by its run. Values are the stored summaries'."""
    import re

    from starlette.testclient import TestClient

    from auditor.summary import run_summary
    from reports.comparison import _env
    from reports.server import create_app

    model = f"{Path(__file__).resolve().parent.parent / 'examples' / 'blocks.py'}:mlp"
    common = ["--runs", 200, "--warmup", 5, "--profile-runs", 5, "--results-dir", tmp_path / "r", "--json"]
    first = json.loads(in_process(capsys, tmp_path, "compile-all", model, "-c", "onnxruntime", "-c", "torch-eager",
                                  *common)[0])["runs"]
    second = json.loads(in_process(capsys, tmp_path, "compile-all", model, "-c", "onnxruntime", *common)[0])["runs"]
    (a,), (b,) = {r["audit_id"] for r in first}, {r["audit_id"] for r in second}
    assert a != b and [r["status"] for r in first + second] == ["ok"] * 3
    us = _env.filters["us"]

    def table(html: str) -> dict[str, list[str]]:
        """The comparison table: variant label -> its cells' text (tags stripped)."""
        body = html.split('id="comparison"', 1)[1].split("</table>", 1)[0].split("<tbody>", 1)[1]
        rows = {}
        for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S):
            cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", tr, re.S)]
            rows[cells[0].lstrip("★ ")] = cells
        return rows

    with TestClient(create_app(tmp_path / "r", run_summary), raise_server_exceptions=False) as client:
        page = client.get("/compare", params={"audits": f"{a},{b}"})
        assert page.status_code == 200
        rows = table(page.text)
        expect = {f"{r['variant']} ({audit[-6:]})": r for audit, runs in ((a, first), (b, second)) for r in runs}
        assert set(rows) == set(expect) == {f"onnxruntime ({a[-6:]})", f"torch-eager ({a[-6:]})",
                                             f"onnxruntime ({b[-6:]})"}
        for label, r in expect.items():
            assert rows[label][2] == us(r["p50_us"]) and rows[label][3] == us(r["p99_us"])
            assert rows[label][-1] == r["run_id"][:8]
        dist = json.loads(re.search(r'id="spec-dist">(.*?)</script>', page.text, re.S).group(1))
        assert {s["variant"] for s in dist["datasets"]["samples"]} == set(expect)  # both audits' samples drawn
        ort_a, ort_b = first[0] if first[0]["variant"] == "onnxruntime" else first[1], second[0]
        page = client.get("/compare", params={"runs": f"{ort_a['run_id']},{ort_b['run_id'][:10]}"})
        assert page.status_code == 200
        rows = table(page.text)
        assert set(rows) == {f"onnxruntime ({ort_a['run_id'][:6]})", f"onnxruntime ({ort_b['run_id'][:6]})"}
        assert rows[f"onnxruntime ({ort_b['run_id'][:6]})"][2] == us(ort_b["p50_us"])
        assert client.get("/compare", params={"audits": f"{a},nosuch"}).status_code == 404


@pytest.mark.parametrize("url,status,text", [
    ("/run/ffffffffffff", 404, "no run 'ffffffffffff'"),
    ("/run/bad!id", 400, "malformed run_id"),
    ("/model/0000", 404, "no model '0000'"),
    ("/audit/nope", 404, "no audit 'nope'"),
    ("/profile/zz", 404, "no profile 'zz'"),
    ("/?status=bogus", 400, "unknown status 'bogus'"),
    ("/?limit=x", 400, "limit must be a whole number"),
    ("/?limit=0", 400, "limit must be between"),
    ("/?drop=table", 400, "unknown query parameter(s): drop"),
    ("/compare?runs=abc", 400, "runs needs two ids"),
    ("/compare?runs=a,b&audits=c,d", 400, "give runs=ID,ID or audits=ID,ID"),
    ("/files/..%2f..%2fetc%2fpasswd", 404, "no such file"),
    ("/files/%2e%2e/%2e%2e/etc/passwd", 404, "no such file"),
    ("/files/results.sqlite", 404, "no such file"),
    ("/files/reports/../../../etc/hostname", 404, ""),
    ("/nowhere", 404, ""),
])
def test_serve_bad_requests_get_a_4xx_line(served, url, status, text):
    client, *_ = served
    r = client.get(url)
    assert r.status_code == status and text in r.text and "Traceback" not in r.text, (r.status_code, r.text)
    assert "root:" not in r.text and "results.sqlite" not in r.text.replace("no such file: results.sqlite", "")


def test_serve_is_read_only(served):
    import sqlite3

    client, runs, _, results = served
    assert client.post("/").status_code == 405 and client.delete(f"/run/{runs['sofie']['run_id']}").status_code == 405
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        client.app.state.store.db.execute("DELETE FROM runs")
    assert len(client.get("/api/runs").json()) == 3


def test_served_pages_and_profile_viewer_in_a_browser(home, served, browser, tmp_path):
    """The installed console script serves the user's store; Chromium opens a model page, a run
    page, the live progress page and a stored profile in speedscope: only this server is asked
    for anything, no console errors, charts drawn."""
    import socket
    import time
    import urllib.request

    from reports.server import SPEEDSCOPE

    folder, _, runs = home
    _, _, profile_id, _ = served
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(CONSOLE_SCRIPT), "serve", "--port", str(port)], cwd=folder, env=user_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/api/progress", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "auditor serve did not answer within 120 s"
                time.sleep(0.5)
        eager = runs["torch-eager"]
        for name, path in [("model", f"/model/{eager['model_hash']}"), ("run", f"/run/{eager['run_id']}"),
                           ("progress", "/progress")]:
            page, errors, requests = open_page(browser, base + path, tmp_path / f"serve-{name}.png")
            assert errors == [], (name, errors)
            assert all(u.startswith(base + "/") for u in requests), requests
            if name == "model":
                assert all(n > 5 for n in chart_marks(page).values()) and len(chart_marks(page)) == 4
            if name == "progress":
                page.wait_for_function("document.querySelector('#audits tbody').rows.length > 0")
                assert "1 ok, 1 mismatch, 1 failed" in page.inner_text("#audits")
            page.close()
        if SPEEDSCOPE.is_dir():
            page = browser.new_page(viewport={"width": 1150, "height": 700})
            errors, requests = [], []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(f"{base}/profile/{profile_id}")
            page.click("#speedscope")
            page.wait_for_selector("canvas", timeout=20000)
            page.wait_for_timeout(1000)
            page.screenshot(path=str(tmp_path / "speedscope.png"))
            assert errors == [] and all(u.startswith(base + "/") for u in requests), (errors, requests)
            assert f"/profile/{profile_id}/folded" in " ".join(requests)
            page.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
