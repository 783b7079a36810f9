"""``python -m bench``: run the chosen suites, print a table per suite, write JSON.

    python -m bench                         codec, engine, registry
    python -m bench --suite http            only the HTTP suite (starts a server)
    python -m bench --suite cluster         one node and a 4-node loopback cluster, the same load
    python -m bench --suite migration       4 KiB GET/PUT p50/p99 with and without a migration running
    python -m bench --suite smallwrites     4 KiB PUT: the fsync-per-file reference, Buckets without and with the log
    python -m bench --suite versioning      PUT/GET/DELETE/list on a versioned bucket beside an unversioned one
    python -m bench --suite rebuild         a registry rebuilt from the disks: time and heap at 20k and 100k objects
    python -m bench --all --quick           every suite, shrunk to a smoke check
    python -m bench --json out.json         write the JSON there instead of bench/results/

Exit status is 0 whatever the figures are (a miss is reported, not raised); 1 if a suite
crashed, 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
import traceback
from datetime import datetime, timezone

from bench.measure import OtherLoad
from bench.report import SuiteResult, format_table, machine_info, write_json

SUITES = {
    "codec": "bench.codec_suite",
    "engine": "bench.engine_suite",
    "registry": "bench.registry_suite",
    "http": "bench.http_suite",
    "cluster": "bench.cluster_suite",
    "migration": "bench.migration_suite",
    "smallwrites": "bench.smallwrites_suite",
    "versioning": "bench.versioning_suite",
    "scale": "bench.scale_suite",
    "bigwrites": "bench.bigwrites_suite",
    "rebuild": "bench.rebuild_suite",
}
DEFAULT_SUITES = ("codec", "engine", "registry")
RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Buckets benchmarks: run the chosen suites, print a table per suite, write JSON.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default=None,
                        help=f"comma-separated suites: {','.join(SUITES)} (default: {','.join(DEFAULT_SUITES)})")
    parser.add_argument("--all", action="store_true", help="run every suite, http and cluster included")
    parser.add_argument("--quick", action="store_true", help="shrink every suite to a smoke check (< 1 min total)")
    parser.add_argument("--json", metavar="PATH",
                        help="write results here (default: bench/results/<UTC time>.json and latest.json)")
    parser.add_argument("--dir", metavar="DIR",
                        help="where temporary disk directories go (default: the system temp dir); "
                             "point it at the file system you want measured")
    parser.add_argument("--http-populate", choices=("http", "registry"), default="http",
                        help="http suite: how the 100k listing objects are created: real PUTs over HTTP "
                             "(default, minutes) or entries filed into the stopped server's registry (seconds)")
    parser.add_argument("--profile", action="store_true",
                        help="engine suite: also print a cProfile of the event-loop thread "
                             "(one large PUT and GET, 200 small PUTs; sync on)")
    args = parser.parse_args(argv)
    if args.all:
        names = list(SUITES)
    elif args.suite:
        names = [s.strip() for s in args.suite.split(",") if s.strip()]
    else:
        names = list(DEFAULT_SUITES)
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    args.names = names
    return args


def run_suite(name: str, args: argparse.Namespace) -> SuiteResult:
    start = time.perf_counter()
    load = OtherLoad()
    try:
        module = importlib.import_module(SUITES[name])
        result = module.run(quick=args.quick, base_dir=args.dir, profile=args.profile,
                            http_populate=args.http_populate)
    except Exception as exc:
        traceback.print_exc()
        result = SuiteResult(name, status="error", reason=f"{type(exc).__name__}: {exc}")
    result.seconds = time.perf_counter() - start
    result.other_cpus = load.cpus()
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(timezone.utc)
    machine = machine_info()
    print(f"bench: {', '.join(args.names)}{' (quick)' if args.quick else ''} on "
          f"{machine['cpu_count']} CPUs, Python {machine['python']}, {machine['platform']}", flush=True)
    results: list[SuiteResult] = []
    for name in args.names:
        result = run_suite(name, args)
        results.append(result)
        print()
        print(format_table(result), flush=True)
    document = {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": sys.argv[1:] if argv is None else argv,
        "quick": args.quick,
        "machine": machine,
        "suites": {r.name: r.to_json() for r in results},
    }
    if args.json:
        paths = [args.json]
    else:
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        paths = [os.path.join(RESULTS_DIR, f"{stamp}.json"), os.path.join(RESULTS_DIR, "latest.json")]
    for path in paths:
        write_json(path, document)
    print(f"\nresults written to {', '.join(paths)}")
    return 1 if any(r.status == "error" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
