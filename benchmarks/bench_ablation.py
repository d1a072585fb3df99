"""Time lib_nb's ablations on the paper's seed-0 modular-addition graph; one JSON line per workload.

Workloads (spec §7, float32, test split, as published):
  node_exponential_lib   exponential node ablation (c=10, b=1.05) of ln1.0, ln2.0, unembed in the LIB basis
  edge_bisect_lib        bisect edge ablation (δ = 0.001, default candidate count) of the three LIB edge blocks
  edge_bisect_lib_unembed  the same, unembed -> output only (the quick workload)

Usage: python benchmarks/bench_ablation.py [--quick] [--device cpu|cuda] [--workloads a,b]
Needs ../shared/data/modadd_paper (prints a skip line without it).
"""
import argparse, json, os, platform, sys, tempfile, time

import torch


def machine() -> str:
    if torch.cuda.is_available() and os.environ.get('LIB_NB_DEVICE', 'cuda').startswith('cuda'):
        return torch.cuda.get_device_name(0)
    return f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads'


def run(name: str, cfg_file: str, device: str, **overrides) -> dict:
    from lib_nb.ablation import AblationConfig, ablate
    cfg = AblationConfig.from_yaml(cfg_file).replace(out_dir=None, **overrides)   # configs are frozen
    t0, c0 = time.perf_counter(), time.process_time()
    res = ablate(config=cfg, device=device, save=False)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    n_eval = sum(len(r) for r in res.results.values())
    out = dict(workload=name, seconds=round(secs, 2), cpu_seconds=round(cpu, 2), load_avg=round(os.getloadavg()[0], 1), points=n_eval, layers=list(res.results),
               base_score=res.no_ablation_result, device=str(device), machine=machine(), torch=torch.__version__)
    if res.n_edges_required: out['n_edges_required'] = res.n_edges_required
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='node ablation + the unembed edge block only')
    ap.add_argument('--device', default=None, help='torch device (default: lib_nb.core.default_device())')
    ap.add_argument('--workloads', default=None, help='comma-separated workload names')
    a = ap.parse_args(argv)
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    from lib_nb.core import shared_path, default_device
    ref = shared_path('data/modadd_paper/reference_seed0')
    if ref is None:
        print(json.dumps(dict(workload='ablation', skipped='../shared/data/modadd_paper is absent'))); return
    device = a.device or str(default_device())
    work = {
        'node_exponential_lib': lambda: run('node_exponential_lib', ref / 'lib_node_ablation_config.yaml', device),
        'edge_bisect_lib_unembed': lambda: run('edge_bisect_lib_unembed', ref / 'lib_edge_bisect_config.yaml', device,
                                               ablation_node_layers=['unembed', 'output']),
        'edge_bisect_lib': lambda: run('edge_bisect_lib', ref / 'lib_edge_bisect_config.yaml', device),
    }
    names = a.workloads.split(',') if a.workloads else (['node_exponential_lib', 'edge_bisect_lib_unembed'] if a.quick
                                                        else ['node_exponential_lib', 'edge_bisect_lib'])
    for n in names:
        if n not in work: sys.exit(f'unknown workload {n!r}; choose from {list(work)}')
        print(json.dumps(work[n]()), flush=True)


if __name__ == '__main__':
    main()
