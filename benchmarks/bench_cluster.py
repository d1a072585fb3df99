"""Speed-up of the distributed build (`lib_nb.cluster`, spec §9) with 1, 2 and 4 MPI ranks: one JSON line per run.

The workload is a random transformer of the modular-addition shape (3 positions in, 1 out; default p = 23,
d_model 64, d_mlp 128, 60% of the p² pairs), saved to a temporary folder as a checkpoint with its config.yaml, and
built in float64 with the jacobian basis and squared edges (τ = 1e-10, above the gram's rounding floor, so
widths do not flip with the summation order), by `mpiexec -n K` (the mpich pip package's, beside this
Python) running the `lib_build` command of lib_nb.cluster, for every K and split mode asked for. Each rank runs torch
with one thread (OMP_NUM_THREADS=1, also for K = 1), so the speed-up measures the ranks, not BLAS threads; with more
ranks than cores it is bounded by the cores (a 2-core machine cannot exceed 2x, less what else runs there).

    python benchmarks/bench_cluster.py [--ranks 1 2 4] [--split out_dim dataset] [--p 47] [--d-model 64]

Each line: {"workload", "split", "ranks", "seconds" (the mpiexec call, process start-up included), "phases" (rank
0's seconds per build phase), "build_seconds" (their sum), "speedup" (against the first --ranks entry, on
build_seconds), "cpu_seconds_per_rank" (each process's user + system CPU seconds, imports included: the work
each rank did, which the wall clock hides on a busy machine), "max_rel_diff" (largest relative distance of any graph tensor from the first run's graph, bases up
to signs), "cores", "cpu", "load_avg"}.
"""
import argparse, json, os, platform, subprocess, sys, tempfile, time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')


def make_workload(d: Path, p: int, d_model: int, d_mlp: int, frac: float) -> Path:
    import torch, yaml
    from lib_nb.models import tiny_tlens_model
    m = tiny_tlens_model('modadd', seed=0, d_vocab=p + 1, d_model=d_model, d_mlp=d_mlp, d_head=d_model // 4)
    d.mkdir(parents=True, exist_ok=True); torch.save(m.state_dict(), d/'model.pt')
    block = {k: getattr(m.cfg, k) for k in ('act_fn', 'd_head', 'd_mlp', 'd_model', 'd_vocab', 'n_ctx', 'n_heads', 'n_layers')}
    ds = dict(dataset_type='modular_arithmetic', fn_name='add', frac_train=frac, modulus=p, seed=0)
    (d/'config.yaml').write_text(yaml.safe_dump(dict(model={**block, 'normalization_type': None}, dataset=ds)))
    cfg = dict(exp_name='bench', tlens_model_path='model.pt', out_dir=None, last_pos_module_type='add_resid1',
               dataset={**ds, 'return_set': 'train'}, node_layers=['ln1.0', 'ln2.0', 'unembed', 'output'],
               rotate_final_node_layer=False, batch_size=64, dtype='float64', truncation_threshold=1e-10)
    (d/'lib_build.yaml').write_text(yaml.safe_dump(cfg))
    return d/'lib_build.yaml'


# each rank runs the lib_build command of lib_nb.cluster, then writes its CPU seconds (user + system) to a file of
# its own (lines written by several ranks to one pipe can interleave)
CHILD = '''import os, sys, resource, lib_nb.cluster as K
rc = K.main(sys.argv[1:])
u = resource.getrusage(resource.RUSAGE_SELF)
with open(os.path.join(os.environ['BENCH_CPU_DIR'], f'rank_{K.get_dist().rank}'), 'w') as f: f.write(str(u.ru_utime + u.ru_stime))
sys.exit(rc)'''


def max_rel_diff(a, b) -> float:
    import torch
    out = 0.0
    for k in ('mean', 'gram', 'Lambda', 'C', 'W'):
        for n, x in getattr(a, k).items():
            y = getattr(b, k)[n]
            if x.shape != y.shape: return None        # a width differs (an eigenvalue at τ)
            if k in ('C', 'W'): x = x * torch.where((x * y).sum(0) < 0, -1.0, 1.0).to(x.dtype)
            out = max(out, float((x - y).norm() / y.norm()))
    for e, E in a.E_hat.items():
        if E.shape != b.E_hat[e].shape: return None
        out = max(out, float((E - b.E_hat[e]).norm() / b.E_hat[e].norm()))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--ranks', type=int, nargs='+', default=[1, 2, 4])
    ap.add_argument('--split', nargs='+', default=['out_dim', 'dataset'], choices=['out_dim', 'dataset'])
    ap.add_argument('--p', type=int, default=47)
    ap.add_argument('--d-model', type=int, default=64)
    ap.add_argument('--d-mlp', type=int, default=128)
    ap.add_argument('--frac', type=float, default=0.6)
    a = ap.parse_args(argv)
    import yaml
    import lib_nb.build as B
    mpiexec = Path(sys.executable).parent/'mpiexec'
    if not mpiexec.exists(): sys.exit('no mpiexec beside python: pip install mpich mpi4py')
    tmp = Path(tempfile.mkdtemp())
    cfg = make_workload(tmp/'model', a.p, a.d_model, a.d_mlp, a.frac)
    workload = f'modadd-shaped random p={a.p} d_model={a.d_model} d_mlp={a.d_mlp} frac={a.frac}'
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'MKL_NUM_THREADS': '1'}
    first = None
    for split in a.split:
        c = tmp/f'{split}.yaml'
        c.write_text(yaml.safe_dump({**yaml.safe_load(cfg.read_text()), 'dist_split_over': split, 'tlens_model_path': str(tmp/'model'/'model.pt')}))
        base = None
        for k in a.ranks:
            out = tmp/f'{split}_{k}'
            cpu_dir = tmp/f'cpu_{split}_{k}'; cpu_dir.mkdir()
            t0 = time.perf_counter()
            r = subprocess.run([str(mpiexec), '-n', str(k), sys.executable, '-c',
                                CHILD, str(c), '--out', str(out), '-q'],
                               capture_output=True, text=True, env={**env, 'BENCH_CPU_DIR': str(cpu_dir)})
            wall = time.perf_counter() - t0
            if r.returncode != 0: sys.exit(f'mpiexec -n {k} failed:\n{r.stderr[-3000:]}')
            g = B.Graph.load(out)
            cpu = {int(f.name.split('_')[1]): float(f.read_text()) for f in cpu_dir.iterdir()}
            build = sum(v for p, v in g.timings.items() if p != 'save')
            base = base or build
            first = first or g
            print(json.dumps(dict(workload=workload, split=split, ranks=k, seconds=round(wall, 3),
                                  phases={p: round(v, 3) for p, v in g.timings.items()}, build_seconds=round(build, 3),
                                  speedup=round(base / build, 3), cpu_seconds_per_rank=[round(cpu[k], 2) for k in sorted(cpu)],
                                  max_rel_diff=max_rel_diff(g, first),
                                  cores=os.cpu_count(), cpu=platform.processor() or platform.machine(),
                                  load_avg=round(os.getloadavg()[0], 2))), flush=True)


if __name__ == '__main__':
    main()
