"""The README's test command: sync checks, every notebook through nbdev's test runner, then pytest.

Steps, in order; the last line printed is `total: N passed, N failed`:
1. `nbdev_clean` and `nbdev_export` must leave the work tree unchanged (notebooks clean, modules in sync).
2. Each notebook runs through `nbdev.test.test_nb` (what `nbdev_test` calls), `slow` cells included;
   `gpu` cells only where CUDA exists; `browser` cells only where Chromium exists.
3. pytest over `tests/` (everything that is not a notebook).
"""
import os, subprocess, sys, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def git_status():
    return subprocess.run(['git', 'status', '--porcelain'], cwd=ROOT, capture_output=True, text=True).stdout


def sync_check():
    "Fail when nbdev_clean or nbdev_export would change a tracked or untracked file."
    before = git_status()
    for cmd in ('nbdev_clean', 'nbdev_export'):
        r = subprocess.run([str(BIN / cmd)], cwd=ROOT, capture_output=True, text=True)
        if r.returncode: return f'{cmd} failed:\n{r.stdout}{r.stderr}'
    after = git_status()
    if before != after:
        diff = subprocess.run(['git', 'diff', '--stat'], cwd=ROOT, capture_output=True, text=True).stdout
        return f'nbdev_clean / nbdev_export changed files; run both and commit:\n{after}\n{diff}'
    return None


def force_flags():
    flags = ['slow']
    try:
        import torch
        if torch.cuda.is_available(): flags.append('gpu')
    except ImportError: pass
    if Path('/usr/bin/chromium').exists() and os.environ.get('LIB_NB_SKIP_BROWSER') != '1': flags.append('browser')
    return flags


def _run_nb(fn, flags):
    "One notebook through `nbdev_test` in its own process (IPython replaces __main__, so never reuse a worker)."
    t = time.time()
    r = subprocess.run([str(BIN/'nbdev_test'), '--path', fn, '--flags', ' '.join(flags), '--n_workers', '0'],
                       cwd=ROOT, capture_output=True, text=True)
    return fn, r.returncode == 0 and 'Success' in r.stdout, time.time() - t, r.stdout + r.stderr


def run_notebooks(flags):
    from nbdev.doclinks import nbglob
    os.chdir(ROOT)
    files = sorted(str(f.relative_to(ROOT)) for f in nbglob(as_path=True))
    n_workers = int(os.environ.get('LIB_NB_TEST_WORKERS', '2'))
    results = []
    with ThreadPoolExecutor(n_workers) as ex:
        for fn, ok, secs, out in ex.map(lambda f: _run_nb(f, flags), files):
            print(f"{'PASS' if ok else 'FAIL'} {fn} ({secs:.0f} s)", flush=True)
            if not ok: print(out[-6000:], flush=True)
            results.append(ok)
    return results


def run_pytest():
    os.chdir(ROOT)
    counts = {}
    class Count:
        def pytest_terminal_summary(self, terminalreporter):
            st = terminalreporter.stats
            counts.update(passed=len(st.get('passed', [])), skipped=len(st.get('skipped', [])),
                          failed=len(st.get('failed', [])) + len(st.get('error', [])))
    import pytest
    code = pytest.main(['-q', '-p', 'no:cacheprovider', 'tests'], plugins=[Count()])
    counts = {'passed': 0, 'failed': 0, 'skipped': 0, **counts}
    if code not in (0, 1, 5): counts['failed'] += 1  # collection or internal error
    return counts


def main():
    t0 = time.time()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    passed = failed = skipped = 0
    problem = sync_check()
    if problem: print(problem, flush=True); failed += 1
    else: print('PASS nbdev_clean / nbdev_export leave the tree unchanged', flush=True); passed += 1
    flags = force_flags()
    print(f'notebooks: running with flags {flags}', flush=True)
    nb = run_notebooks(flags)
    passed += sum(nb); failed += len(nb) - sum(nb)
    c = run_pytest()
    passed += c['passed']; failed += c['failed']; skipped += c['skipped']
    print(f'notebooks: {sum(nb)} passed, {len(nb) - sum(nb)} failed; pytest: {c["passed"]} passed, '
          f'{c["failed"]} failed, {c["skipped"]} skipped; {time.time() - t0:.0f} s')
    print(f'total: {passed} passed, {failed} failed, {skipped} skipped')
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
