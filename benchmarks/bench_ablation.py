"""Time lib_nb's ablations on the paper's seed-0 modular-addition graph; one JSON line per workload.

Workloads (spec §7, float32, test split, as published):
  node_exponential_lib   exponential node ablation (c=10, b=1.05) of ln1.0, ln2.0, unembed in the LIB basis
  edge_bisect_lib        bisect edge ablation (δ = 0.001, default candidate count) of the three LIB edge blocks
  edge_bisect_lib_unembed  the same, unembed -> output only (the quick workload)
  profile_lib            where the time of the two paper workloads goes: loading, folding, data, activations, and per
                         layer (block) the section evaluations, the samples pushed through them and their seconds
                         (edge blocks: also the fast path's mask-row groups per section form)
  faithfulness_lib       one faithfulness check (issue 18 item 1) on the graph's own build data set (train split, float32):
                         the first call (loads model and data), a repeated nodes call (13/17/8 features kept), and
                         edges calls with the bisect answers' masks (133/91/633 edges): cold, repeated, and with the
                         last block changed to 600 edges (the memo reruns only the changed rows)

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
    out['scores'] = {k: {str(a): s for a, s in r.items()} for k, r in res.results.items()}   # every point or probe, to compare runs
    return out


def run_profile(ref, device: str) -> dict:
    "Phase times of `ablate` for the node and the edge config, and per layer the section calls and their seconds."
    from collections import defaultdict
    from lib_nb.ablation import AblationConfig, ablated_score, edge_ablation_curve, load_model_for, node_ablation_curve
    from lib_nb.build import ActivationStore
    from lib_nb.data import load_dataset
    from lib_nb.graph import load_graph
    out, clock = dict(workload='profile_lib'), lambda: (time.perf_counter(), time.process_time())
    def since(t): return round(time.perf_counter() - t[0], 3), round(time.process_time() - t[1], 3)
    ncfg = AblationConfig.from_yaml(ref / 'lib_node_ablation_config.yaml')
    ecfg = AblationConfig.from_yaml(ref / 'lib_edge_bisect_config.yaml')
    t = clock(); g = load_graph(ncfg.resolve(ncfg.rib_results_path)); out['load_graph'] = since(t)
    t = clock(); model, mc = load_model_for(g, ncfg, device); out['load_and_fold_model'] = since(t)
    t = clock(); ds = load_dataset(ncfg.dataset, mc); out['dataset'] = since(t)
    t = clock(); store = ActivationStore(model, ds, ncfg.batch_size); out['activations'] = since(t)
    t = clock(); base = ablated_score(store); out['base_score'] = since(t)
    stats, section = defaultdict(lambda: [0, 0, 0.0]), model.section
    def counted(l, x):                                   # the benchmark's own wrapper: calls, samples, seconds
        t0 = time.perf_counter(); y = section(l, x); s = stats[l]; s[0] += 1; s[1] += x.shape[0]; s[2] += time.perf_counter() - t0
        return y
    model.section = counted
    from lib_nb import ablation
    fast, fstats = ablation._fast_group, defaultdict(lambda: [0, 0, 0.0])
    def fast_counted(form, M, u, index, *rest):         # edge ablation's fast path: mask-row groups, samples, seconds
        t0 = time.perf_counter(); y = fast(form, M, u, index, *rest); s = fstats[form['kind']]
        s[0] += 1; s[1] += index.shape[0]; s[2] += time.perf_counter() - t0
        return y
    ablation._fast_group = fast_counted
    for name, cfg in [('node', ncfg), ('edge', ecfg)]:
        layers = cfg.ablation_node_layers[:-1] if name == 'edge' else cfg.ablation_node_layers
        for layer in layers:
            stats.clear(); fstats.clear(); t = clock()
            if name == 'edge': n = len(edge_ablation_curve(store, g, layer, cfg.schedule, base=base).scores)
            else: n = len(node_ablation_curve(store, g, layer, cfg.schedule, base=base))
            wall, cpu = since(t)
            out[f'{name}:{layer}'] = dict(seconds=wall, cpu_seconds=cpu, points=n,
                                          sections={f'section_{l}': dict(calls=c, samples=m, seconds=round(sec, 2))
                                                    for l, (c, m, sec) in sorted(stats.items())})
            if fstats: out[f'{name}:{layer}']['fast_path'] = {k: dict(groups=c, samples=m, seconds=round(sec, 2))
                                                               for k, (c, m, sec) in fstats.items()}
    model.section, ablation._fast_group = section, fast
    return out | dict(n_samples=store.n_samples, load_avg=round(os.getloadavg()[0], 1), device=str(device), machine=machine(),
                      torch=torch.__version__)


def run_faithfulness(ref, device: str) -> dict:
    from lib_nb import ablation
    from lib_nb.ablation import faithfulness, edge_mask
    from lib_nb.graph import load_graph
    path = ref / 'lib_graph.safetensors'
    g = load_graph(path)
    nodes = {'ln1.0': range(13), 'ln2.0': range(17), 'unembed': range(8)}
    edges = {p: edge_mask(g.E_hat[p], m, g.centered) for p, m in zip(g.edge_pairs, [133, 91, 633])}
    edges2 = {**edges, g.edge_pairs[-1]: edge_mask(g.E_hat[g.edge_pairs[-1]], 600, g.centered)}
    def timed(**kw):
        t0 = time.perf_counter(); r = faithfulness(path, device=device, **kw); return time.perf_counter() - t0, r
    first, f = timed(nodes=nodes)
    ts = [timed(nodes=nodes) for _ in range(3)]
    out = dict(workload='faithfulness_lib', first_call_seconds=round(first, 2),
               nodes_call=dict(seconds=round(min(t for t, _ in ts), 3), score=ts[0][1].score, n_nodes=ts[0][1].n_nodes, n_edges=ts[0][1].n_edges))
    for _, e in ablation.FAITH_CACHE.entries.values(): e.pop('memo', None)          # cold: no output column run before
    for name, kw in [('edges_cold', edges), ('edges_repeat', edges), ('edges_last_block_changed', edges2)]:
        t, r = timed(edges=kw, mode='edges')
        out[name] = dict(seconds=round(t, 3), score=r.score, n_nodes=r.n_nodes, n_edges=r.n_edges)
    return out | dict(full=f.full, baseline=f.baseline, load_avg=round(os.getloadavg()[0], 1), device=str(device),
                      machine=machine(), torch=torch.__version__)


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
        'profile_lib': lambda: run_profile(ref, device),
    }
    names = a.workloads.split(',') if a.workloads else (['node_exponential_lib', 'edge_bisect_lib_unembed'] if a.quick
                                                        else ['node_exponential_lib', 'edge_bisect_lib', 'faithfulness_lib'])
    for n in names:
        if n not in work: sys.exit(f'unknown workload {n!r}; choose from {list(work)}')
        print(json.dumps(work[n]()), flush=True)


if __name__ == '__main__':
    main()
