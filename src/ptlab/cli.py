"""The ``ptlab`` command: list, check, replay, simulate.  Only wiring."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from .check import (
    STRATEGIES,
    CheckOutcome,
    CheckSpec,
    InputError,
    replay_trace,
    run_check,
    scenario,
    trace_file,
    write_atomic,
)
from .engine import ModelError, ModelViolation, context_switches, encode
from .html import render_html
from .report import render_steps_long, render_table, render_trace
from .scenarios import SCENARIOS
from .simulate import SimResult, WorkloadError, parse_workload, simulate


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One line, exit 2 (argparse prints the usage too, which buries the error).
        sys.stderr.write(f"ptlab: error: {message} (see 'ptlab {self.prog.split()[-1]} --help')\n"
                         if " " in self.prog else f"ptlab: error: {message}\n")
        sys.exit(2)


def _parse_set(items: Sequence[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise InputError(f"bad --set {item!r}: expected NAME=VALUE")
        try:
            out[name] = int(value)
        except ValueError:
            raise InputError(f"bad --set {item!r}: {value!r} is not an integer") from None
    return out


def _cmd_list(args: argparse.Namespace) -> int:
    for sc in SCENARIOS.values():
        print(f"{sc.name}: {sc.title}")
        print(f"  source: {sc.source}")
        print("  parameters (--set NAME=VALUE):")
        for p in sc.params:
            deep = f" (--deep: {p.deep})" if p.deep is not None else ""
            print(f"    {p.name}={p.default}{deep}  [{p.minimum}..{p.maximum}]  {p.help}")
        print("  variants (expected verdict):")
        w = max(len(v.name) for v in sc.variants)
        for v in sc.variants:
            extra = " (with " + ", ".join(f"{k}={x}" for k, x in v.params) + ")" if v.params \
                else ""
            print(f"    {v.name.ljust(w)}  {v.expect.ljust(16)}  {v.summary}{extra}")
        print()
    return 0


def _coverage(out: CheckOutcome) -> str:
    r = out.result
    bits = [f"{r.stats.executions} executions"]
    if r.strategy == "dpor":
        bits.append("exhaustive" if r.exhaustive else "NOT exhaustive")
        bits.append(f"{r.stats.sleep_blocked} sleep-set blocked")
    else:
        bits.append(f"{r.strategy} sampling, seed {out.spec.seed}: not exhaustive")
    if r.bound_hit:
        bits.append(f"bound hit: {r.bound_hit}")
    return ", ".join(bits)


def _print_measured(name: str) -> None:
    sc = SCENARIOS[name]
    if sc.measure is not None:
        print()
        for line in sc.measure():
            print("measured: " + line)


def _print_outcome(out: CheckOutcome, long: bool) -> None:
    params = " ".join(f"{k}={v}" for k, v in out.params.items())
    print(f"== {out.spec.scenario} / {out.spec.variant}  ({params})")
    print(f"strategy: {out.spec.strategy}; covered: {_coverage(out)}")
    if out.violation is None:
        what = "no violation" + ("" if out.result.exhaustive else " found (search was bounded)")
        print(f"verdict: ok — {what}; expected: {out.expected}")
        if out.result.reached:
            print("sometimes: " + "; ".join(sorted(out.result.reached)))
        return
    v = out.violation
    assert out.schedule is not None and out.trace is not None
    print(f"verdict: violation {v.kind} — {v.message}; expected: {out.expected}")
    print(f"schedule ({len(out.schedule)} steps, {context_switches(out.schedule)} context "
          f"switches, {out.shrunk}): {encode(out.schedule)}")
    print()
    print(render_trace(out.trace, v.step))
    if long:
        print()
        print(render_steps_long(out.trace))
    print()
    print(v.report)


def _html(out: CheckOutcome) -> str:
    params = " ".join(f"{k}={v}" for k, v in out.params.items())
    title = f"{out.spec.scenario} / {out.spec.variant} ({params})"
    summary = [f"strategy: {out.spec.strategy}; covered: {_coverage(out)}"]
    v = out.violation
    if v is None:
        summary.append(f"verdict: ok, no violation; expected: {out.expected}")
        return render_html(title, summary, [], None, "")
    assert out.schedule is not None and out.trace is not None
    summary.append(f"verdict: violation {v.kind}: {v.message}; expected: {out.expected}")
    summary.append(f"schedule ({len(out.schedule)} steps, {context_switches(out.schedule)} "
                   f"context switches, {out.shrunk}): {encode(out.schedule)}")
    return render_html(title, summary, out.trace, v.step, v.report)


def _cmd_check(args: argparse.Namespace) -> int:
    overrides = _parse_set(args.set or [])
    if args.all:
        return _check_all(args, overrides)
    if not args.scenario:
        raise InputError("name a scenario, or use --all (see 'ptlab list')")
    sc = scenario(args.scenario)
    variants = [args.variant] if args.variant else [v.name for v in sc.variants]
    if args.html and len(variants) > 1:
        raise InputError("--html draws one result: name a --variant")
    outs = []
    for var in variants:
        spec = CheckSpec(sc.name, var, overrides, args.strategy, args.executions, args.seed,
                         args.preemptions, args.depth, args.max_steps, args.deep,
                         minimal=not args.local_shrink)
        outs.append(run_check(spec))
    if args.trace_out:
        bad = [o for o in outs if o.violation is not None]
        if len(bad) > 1:
            raise InputError("--trace-out saves one trace: name a --variant")
        if bad:
            write_atomic(args.trace_out, trace_file(bad[0]))
    if args.html:
        write_atomic(args.html, _html(outs[0]))
    if args.json:
        docs = [o.to_json() for o in outs]
        print(json.dumps(docs[0] if len(docs) == 1 else docs, indent=2, sort_keys=True))
    else:
        for i, o in enumerate(outs):
            if i:
                print()
            _print_outcome(o, args.long)
        _print_measured(sc.name)
    return 1 if any(o.violation is not None for o in outs) else 0


def _check_all(args: argparse.Namespace, overrides: dict[str, int]) -> int:
    if args.scenario or args.variant:
        raise InputError("--all checks every scenario and variant; drop the names")
    if args.html or args.trace_out:
        raise InputError("--html and --trace-out draw one result: name a scenario and a "
                         "--variant instead of --all")
    rows = []
    docs = []
    ok = True
    for sc in SCENARIOS.values():
        for v in sc.variants:
            spec = CheckSpec(sc.name, v.name, {}, args.strategy, args.executions, args.seed,
                             args.preemptions, args.depth, args.max_steps, args.deep)
            out = run_check(spec)
            ok &= out.matches
            docs.append(out.to_json())
            r = out.result
            rows.append([sc.name, v.name, v.expect, out.found, str(r.stats.executions),
                         "yes" if r.exhaustive else "no", "ok" if out.matches else "MISMATCH"])
    if args.json:
        print(json.dumps(docs, indent=2, sort_keys=True))
    else:
        print(render_table(["scenario", "variant", "expected", "found", "executions",
                            "exhaustive", "result"], rows))
        print()
        n = len(rows)
        bad = sum(1 for r in rows if r[-1] != "ok")
        print(f"{n - bad} of {n} variants match their expected verdict")
    return 0 if ok else 1


def _cmd_replay(args: argparse.Namespace) -> int:
    out = replay_trace(args.file)
    doc = out.doc
    print(f"== replay {doc['scenario']} / {doc['variant']}: {doc['schedule']}")
    v = out.violation
    print(render_trace(out.trace, v.step if v else None))
    print()
    if v is None:
        print("no violation on replay (the saved trace recorded "
              f"{(doc.get('violation') or {}).get('kind', 'none')})")
        return 0
    print(v.report)
    print()
    print(f"verdict: violation {v.kind} at step {v.step} — "
          + ("same as recorded" if out.same else "DIFFERENT from the recorded one"))
    return 1


def _render_sim(res: SimResult) -> str:
    levels = list(res.steps[0].tables) if res.steps else []
    head = ["step", "what", "VmPTE kB", "delta kB", *[f"{lv} tables" for lv in levels],
            "NR_PAGETABLE", "memcg pt kB", "RSS pages", "faults", "GPs", "IPIs", "deferred B"]
    rows = [[str(s.index), s.what, str(s.vmpte_kib), f"{s.vmpte_delta_kib:+d}",
             *[str(s.tables[lv]) for lv in levels], str(s.nr_pagetable),
             str(s.memcg_pagetables_kib), str(s.rss_pages),
             str(s.faults), str(s.grace_periods), str(s.ipis_sent), str(s.deferred_bytes)]
            for s in res.steps]
    if any(len(s.mms) > 1 for s in res.steps):
        # Tables and RSS are the parent's; each live process's VmPTE besides.
        head.append("VmPTE kB by process")
        for row, s in zip(rows, res.steps, strict=True):
            row.append(" ".join(f"{n}={v}" for n, v in s.mms.items()))
    return (f"== simulate {res.workload} on {res.arch}, kernel {res.kernel}\n"
            + render_table(head, rows) + "\ncounters oracle: every counter balanced after "
            "every step")


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .arch.geometry import ARCHES
    from .config import ERAS

    if args.arch is not None and args.arch not in ARCHES:
        raise InputError(f"unknown --arch {args.arch!r} (valid: {', '.join(ARCHES)})")
    if args.kernel is not None and args.kernel not in ERAS:
        raise InputError(f"unknown --kernel {args.kernel!r} (valid: {', '.join(ERAS)})")
    try:
        with open(args.workload, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise InputError(f"cannot read workload {args.workload!r}: {e.strerror}") from None
    try:
        res = simulate(parse_workload(args.workload, text), args.arch, args.kernel)
    except WorkloadError as e:
        raise InputError(str(e)) from None
    except ModelViolation as e:
        sys.stderr.write(f"ptlab: the model broke a rule: {e.kind}: {e.message}\n")
        return 1
    if args.json:
        print(json.dumps(res.as_dict(), indent=2))
    else:
        print(_render_sim(res))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from .host import host_supported
    from .validate import Report, check_workload, validate

    why = host_supported()
    if why is not None:
        raise InputError(f"cannot validate on this host: {why}")
    if args.workloads < 1 or args.ops < 2:
        raise InputError("--workloads must be at least 1 and --ops at least 2")
    files = []
    for path in args.workload or []:
        try:
            with open(path, encoding="utf-8") as f:
                files.append(parse_workload(path, f.read()))
        except OSError as e:
            raise InputError(f"cannot read workload {path!r}: {e.strerror}") from None
        except WorkloadError as e:
            raise InputError(str(e)) from None
    if not os.path.isdir(args.save_dir):
        raise InputError(f"--save-dir {args.save_dir!r} is not a directory")
    try:
        report: Report = validate(args.workloads, args.ops, args.seed, files, args.save_dir,
                                  progress=None if args.json else
                                  lambda line: print(line, flush=True))
    except WorkloadError as e:
        raise InputError(str(e)) from None
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, sort_keys=True))
    else:
        print(_render_validate(report, args))
        for path, wl in report.shrunk:
            print(f"\n-- {path}: the shrunk workload, step by step")
            print(_render_steps(check_workload(wl, report.host)))
    bad = report.mismatches or [r for r in report.results if r.error]
    return 1 if bad else 0


def _render_validate(report: Any, args: argparse.Namespace) -> str:
    d = report.as_dict()
    what = f"{len(args.workload)} workload file(s)" if args.workload else \
        f"{args.workloads} workloads x {args.ops} steps, seed {args.seed}"
    lines = [f"== validate: Linux {d['kernel']} ({d['arch']}) against the model "
             f"({d['config']})"]
    lines += [f"   {n}" for n in d["notes"]]
    lines.append(f"{what}: {len(d['mismatches'])} mismatch(es), "
                 f"{len(d['host_errors'])} host error(s)")
    total = sum(d["steps_compared"].values())
    lines.append(f"steps compared ({total}): " + ", ".join(
        f"{k} {v}" for k, v in d["steps_compared"].items()))
    if d["errors_compared"]:
        lines.append("of which failed on the host, as the model predicted: " + ", ".join(
            f"{k} {v}" for k, v in d["errors_compared"].items()))
    if d["steps_excluded"]:
        lines.append("steps excluded: " + ", ".join(
            f"{k} {v}" for k, v in d["steps_excluded"].items()))
        lines += [f"   why: {w}" for w in d["exclusions"]]
    lines.append("page tables the model allocated / freed: " + ", ".join(
        f"{lv} {d['table_allocs'].get(lv, 0)}/{d['table_frees'].get(lv, 0)}"
        for lv in d["table_allocs"] if lv != "pgd"))
    for name, err in d["host_errors"].items():
        lines.append(f"host error in {name}: {err}")
    for m in d["mismatches"]:
        lines.append(f"MISMATCH {m['workload']} step {m['step']} ({m['what']}): host "
                     f"{m['host']}, model {m['model']}")
    return "\n".join(lines)


def _render_steps(res: Any) -> str:
    head = ["#", "step", "host errno", "host dVmPTE", "model errno", "model dVmPTE",
            "host VmPTE", "model VmPTE", "huge host/model", ""]
    rows, host_total, model_total = [], 0, 0
    for s in res.steps:
        if s.what.startswith(("fork", "exit")) or "(" in s.what:
            h_tot, m_tot = "", ""
        else:
            host_total += s.host.delta
            model_total += s.model_delta
            h_tot, m_tot = str(host_total), str(model_total)
        extra = "" if s.host.child_kib is None else \
            f"child: host {s.host.child_kib}, model {s.model_child}"
        huge = "" if s.host.huge_kib is None else f"{s.host.huge_kib}/{s.model_huge}"
        rows.append([str(s.index), s.what, s.host.errno or "-", f"{s.host.delta:+}",
                     s.model_errno or "-", f"{s.model_delta:+}", h_tot, m_tot, huge,
                     ("" if s.agrees else "<< ") + extra])
    return render_table(head, rows)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="ptlab", description="Model and check the Linux page-table lifecycle.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    sub.add_parser("list", help="scenarios, parameters, variants and expected verdicts")
    c = sub.add_parser("check", help="check a scenario's variants")
    c.add_argument("scenario", nargs="?")
    c.add_argument("--variant")
    c.add_argument("--all", action="store_true", help="every scenario and variant against "
                   "its expected verdict")
    c.add_argument("--set", action="append", metavar="NAME=VALUE")
    c.add_argument("--strategy", default="dpor", choices=STRATEGIES)
    c.add_argument("--executions", type=int, help="execution budget (default: 200000 for "
                   "dpor, 1000 for random and pct)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--preemptions", type=int, help="preemption bound (dpor)")
    c.add_argument("--depth", type=int, default=3, help="PCT bug depth")
    c.add_argument("--max-steps", type=int, help="steps one thread may take in one "
                   "execution before it is reported as a livelock")
    c.add_argument("--deep", action="store_true", help="the scenarios' heavier bounds "
                   "(more walkers, fragments, faults): minutes, not seconds")
    c.add_argument("--local-shrink", action="store_true", help="shrink the counterexample "
                   "by local search only, not to the fewest context switches of all "
                   "(which explores every trace)")
    c.add_argument("--json", action="store_true")
    c.add_argument("--long", action="store_true", help="also list every step with its call chain")
    c.add_argument("--trace-out", metavar="FILE", help="save the counterexample for 'ptlab replay'")
    c.add_argument("--html", metavar="FILE", help="write the result as one self-contained "
                   "HTML page with an SVG sequence diagram of the counterexample")
    d = sub.add_parser("docs", help="generate docs/scenarios.md from the scenarios")
    d.add_argument("--out", metavar="FILE", help="write it here (atomically) instead of "
                   "standard output")
    r = sub.add_parser("replay", help="re-run a saved trace")
    r.add_argument("file")
    m = sub.add_parser("simulate", help="run a workload sequentially and report the counters")
    m.add_argument("workload", help="a TOML workload (docs/workloads.md)")
    m.add_argument("--arch", help="override the workload's architecture")
    m.add_argument("--kernel", help="override the workload's kernel era")
    m.add_argument("--json", action="store_true")
    v = sub.add_parser("validate", help="compare the x86-64 model's VmPTE with this "
                       "machine's kernel, step by step")
    v.add_argument("--workloads", type=int, default=10, help="random workloads (default 10)")
    v.add_argument("--ops", type=int, default=40, help="steps per workload (default 40)")
    v.add_argument("--seed", type=int, default=1)
    v.add_argument("--workload", action="append", metavar="FILE", help="run this TOML "
                   "workload instead (repeatable)")
    v.add_argument("--save-dir", default=".", help="where a shrunk mismatch is saved")
    v.add_argument("--json", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "list":
            return _cmd_list(args)
        if args.cmd == "check":
            if args.executions is not None and args.executions < 1:
                raise InputError("--executions must be at least 1")
            if args.preemptions is not None and args.preemptions < 0:
                raise InputError("--preemptions must be at least 0")
            if args.depth < 1:
                raise InputError("--depth must be at least 1")
            if args.max_steps is not None and args.max_steps < 1:
                raise InputError("--max-steps must be at least 1")
            return _cmd_check(args)
        if args.cmd == "simulate":
            return _cmd_simulate(args)
        if args.cmd == "validate":
            return _cmd_validate(args)
        if args.cmd == "docs":
            from .docgen import render_scenarios_doc

            text = render_scenarios_doc()
            if args.out:
                write_atomic(args.out, text)
            else:
                sys.stdout.write(text)
            return 0
        return _cmd_replay(args)
    except InputError as e:
        sys.stderr.write(f"ptlab: error: {e}\n")
        return 2
    except ModelError as e:
        sys.stderr.write(f"ptlab: model error: {e}\n")
        return 3
    except BrokenPipeError:  # pragma: no cover - `ptlab ... | head`
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
