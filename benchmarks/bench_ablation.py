"""Time lib_nb's ablations on the paper's seed-0 modular-addition graph; one JSON line per workload.

Workloads (spec §7, float32, test split, as published):
  node_exponential_lib   exponential node ablation (c=10, b=1.05) of ln1.0, ln2.0, unembed in the LIB basis
  edge_bisect_lib        bisect edge ablation (δ = 0.001, default candidate count) of the three LIB edge blocks
  edge_bisect_lib_unembed  the same, unembed -> output only (the quick workload)
  faithfulness_lib       one faithfulness check (issue 18 item 1) on the graph's own build data set (train split, float32):
                         the first call (loads model and data) and repeated calls, nodes mode (13/17/8 features kept)
                         and edges mode (the bisect answers' masks, 133/91/633 edges)

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


def run_faithfulness(ref, device: str) -> dict:
    from lib_nb.ablation import faithfulness, edge_mask
    from lib_nb.graph import load_graph
    path = ref / 'lib_graph.safetensors'
    g = load_graph(path)
    nodes = {'ln1.0': range(13), 'ln2.0': range(17), 'unembed': range(8)}
    edges = {p: edge_mask(g.E_hat[p], m, g.centered) for p, m in zip(g.edge_pairs, [133, 91, 633])}
    t0 = time.perf_counter(); f = faithfulness(path, nodes, device=device); first = time.perf_counter() - t0
    times = {}
    for mode, kw in [('nodes', dict(nodes=nodes)), ('edges', dict(edges=edges, mode='edges'))]:
        ts = []
        for _ in range(3):
            t0 = time.perf_counter(); r = faithfulness(path, device=device, **kw); ts.append(time.perf_counter() - t0)
        times[mode] = dict(seconds=round(min(ts), 3), max_seconds=round(max(ts), 3), score=r.score, n_nodes=r.n_nodes, n_edges=r.n_edges)
    return dict(workload='faithfulness_lib', first_call_seconds=round(first, 2), **{f'{m}_call': v for m, v in times.items()},
                full=f.full, baseline=f.baseline, load_avg=round(os.getloadavg()[0], 1), device=str(device), machine=machine(),
                torch=torch.__version__)


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
        'faithfulness_lib': lambda: run_faithfulness(ref, device),
    }
    names = a.workloads.split(',') if a.workloads else (['node_exponential_lib', 'edge_bisect_lib_unembed'] if a.quick
                                                        else ['node_exponential_lib', 'edge_bisect_lib', 'faithfulness_lib'])
    for n in names:
        if n not in work: sys.exit(f'unknown workload {n!r}; choose from {list(work)}')
        print(json.dumps(work[n]()), flush=True)


if __name__ == '__main__':
    main()
