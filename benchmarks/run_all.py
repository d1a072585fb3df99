"""Run every `benchmarks/bench_*.py` workload, one after another, passing through its JSON lines.

    python benchmarks/run_all.py [--quick] [--only NAME ...] [-- extra args for every script]

`--quick` passes `--quick` to the scripts that accept it (bench_lm.py: 8 x 16 tokens). Each script runs in its
own process, so peak memory is per workload. A failing script prints a JSON line with "error" and the run goes on;
the exit status is the number of failed scripts.
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts() -> list[Path]:
    return sorted(p for p in HERE.glob('bench_*.py'))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--quick', action='store_true', help='small sizes where a script supports --quick')
    p.add_argument('--only', nargs='*', help='script names (bench_lm, bench_build, ...) to run')
    p.add_argument('extra', nargs=argparse.REMAINDER, help='arguments after -- go to every script')
    a = p.parse_args(argv)
    env = dict(os.environ, HF_HUB_OFFLINE='1', PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get('PYTHONPATH', ''))
    failed = 0
    for s in scripts():
        if a.only and s.stem not in a.only: continue
        args = [sys.executable, str(s)]
        help_text = subprocess.run(args + ['--help'], capture_output=True, text=True, env=env).stdout
        if a.quick and '--quick' in help_text: args.append('--quick')
        extra = [x for x in (a.extra or []) if x != '--']
        t = time.perf_counter()
        r = subprocess.run(args + extra, env=env, stdout=sys.stdout, stderr=subprocess.PIPE, text=True)
        if r.returncode != 0:
            failed += 1
            print(json.dumps(dict(script=s.name, error=r.stderr.strip().splitlines()[-1:] or [f'exit {r.returncode}'],
                                  seconds=round(time.perf_counter() - t, 2))), flush=True)
    return failed


if __name__ == '__main__':
    sys.exit(main())
