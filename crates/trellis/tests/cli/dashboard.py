#!/usr/bin/env python3
"""Loads the Trellis dashboard in headless Chromium, waits until its service graph shows the
expected services and edges with traffic, saves a full-page screenshot and prints a JSON report.
Exits 1 (with the report) when the page misses something, logs a console error, throws, or
requests anything from another origin.

The CLI test runs it during `trellis demo`. It also makes the README's screenshot:

    trellis demo &        # prints "dashboard: http://127.0.0.1:PORT/"
    python3 crates/trellis/tests/cli/dashboard.py --url http://127.0.0.1:PORT/ \\
        --screenshot docs/dashboard.png

Needs Python Playwright (`pip install playwright`) and Debian's Chromium; Playwright drives the
installed browser and downloads none.
"""

import argparse
import json
import sys
import tempfile
import time
from urllib.parse import urlsplit

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

DEMO_SERVICES = ["loadgen", "frontend", "catalog", "ratings"]
DEMO_EDGES = ["loadgen->frontend", "frontend->catalog", "frontend->ratings"]

# True once the graph has every service, every edge carries requests, and every service that
# answers requests has a chart line.
READY = """([services, edges]) => {
  if (document.body.dataset.state !== "live") return false;
  const node = (s) => document.querySelector(`#graph g.node[data-service="${s}"]`);
  const edge = (e) => document.querySelector(`#graph g.edge[data-edge="${e}"]`);
  const busy = (e) => edge(e) && parseFloat(edge(e).dataset.rps) > 0;
  const callees = edges.map((e) => e.split("->")[1]);
  const charted = (s) =>
    document.querySelector(`#charts [data-chart-service="${s}"] path.line-rps`);
  return services.every(node) && edges.every(busy) && callees.every(charted);
}"""

# What the page shows, for the report.
SHOWN = """() => ({
  state: document.body.dataset.state,
  error: document.body.dataset.error || null,
  services: [...document.querySelectorAll("#graph g.node")].map((n) => n.dataset.service),
  edges: Object.fromEntries([...document.querySelectorAll("#graph g.edge")].map((e) =>
    [e.dataset.edge, { rps: parseFloat(e.dataset.rps), success: e.dataset.success }])),
  edge_labels: [...document.querySelectorAll("#graph text.edge-label")].map((t) => t.textContent),
  charts: [...document.querySelectorAll("#charts [data-chart-service]")]
    .map((c) => c.dataset.chartService),
  workloads: [...document.querySelectorAll("#workloads tr[data-workload]")].map((r) =>
    [...r.cells].map((c) => c.textContent)),
  routes: [...document.querySelectorAll("#routes tr[data-route]")].map((r) => r.dataset.route),
  policies: [...document.querySelectorAll("#policies tr[data-policy]")]
    .map((r) => r.dataset.policy),
})"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the dashboard, e.g. http://127.0.0.1:15014/")
    parser.add_argument("--screenshot", required=True, help="where to save the PNG")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--timeout", type=float, default=40.0, help="seconds to wait for the graph")
    parser.add_argument("--service", action="append", help="a service the graph must show")
    parser.add_argument("--edge", action="append", help="an edge (CALLER->CALLEE) with traffic")
    parser.add_argument("--settle", type=float, default=0.0,
                        help="seconds to let the charts grow before the screenshot")
    args = parser.parse_args()
    services = args.service or DEMO_SERVICES
    edges = args.edge or DEMO_EDGES
    origin = urlsplit(args.url)[:2]

    report = {"url": args.url, "console_errors": [], "page_errors": [], "foreign_requests": [],
              "failed_requests": []}
    with tempfile.TemporaryDirectory(prefix="trellis-dashboard-chromium-") as profile, \
            sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=args.chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1440, "height": 900},
            color_scheme="light",
        )
        try:
            page = context.new_page()
            page.on("console", lambda m: m.type == "error" and report["console_errors"].append(
                f"{m.text} ({m.location.get('url', '')}:{m.location.get('lineNumber', '')})"))
            page.on("pageerror", lambda e: report["page_errors"].append(str(e)))
            page.on("request", lambda r: urlsplit(r.url)[:2] not in (origin, ("data", ""))
                    and report["foreign_requests"].append(r.url))
            page.on("requestfailed", lambda r: report["failed_requests"].append(
                f"{r.url}: {r.failure}"))
            page.goto(args.url, wait_until="load")
            try:
                page.wait_for_function(READY, arg=[services, edges],
                                       timeout=args.timeout * 1000, polling=250)
                report["ready"] = True
            except PlaywrightError as e:
                report["ready"] = False
                report["wait_error"] = str(e).splitlines()[0]
            if args.settle > 0:
                time.sleep(args.settle)
            report["shown"] = page.evaluate(SHOWN)
            page.screenshot(path=args.screenshot, full_page=True)
            report["screenshot"] = args.screenshot
        finally:
            context.close()

    missing = [s for s in services if s not in report["shown"]["services"]]
    idle = [e for e in edges if report["shown"]["edges"].get(e, {}).get("rps", 0) <= 0]
    problems = [
        *(f"service {s} not in the graph" for s in missing),
        *(f"edge {e} not in the graph with traffic" for e in idle),
        *(f"console error: {m}" for m in report["console_errors"]),
        *(f"page error: {m}" for m in report["page_errors"]),
        *(f"request to another origin: {u}" for u in report["foreign_requests"]),
        *(f"request failed: {u}" for u in report["failed_requests"]),
    ]
    if report["shown"]["state"] != "live":
        problems.append(f"page state {report['shown']['state']}: {report['shown']['error']}")
    report["problems"] = problems
    print(json.dumps(report, indent=2))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
