"""Kernel-side redraw time of every explorer control (`lib_nb.widgets.explore`): one JSON line per graph and control.

Two graphs: the paper's seed-0 modular-addition LIB graph (`../shared/data/modadd_paper/reference_seed0`, with the
PCA graph to toggle to, the by-layer log norm from its bisect result and, where the checkpoint exists, the p²
activations for Fourier labels), and a random Pythia-shaped graph of 6 node layers of 128-255 features
(`lib_nb.analysis.random_graph`). Each control is moved back and forth `--repeats` times; a move is timed from the
widget's value change to the end of the explorer's reaction (prune, layout, figure update: everything the kernel
does before the browser gets the message), so the first move of a control that fills a cache (a new norm, a new γ)
is reported apart as `first_s`. The issue's targets: under 0.3 s on modular addition, under 1 s on the Pythia shape.

    python benchmarks/bench_explorer.py [--repeats 5] [--only modadd pythia]

Each line: {"workload", "control", "first_s", "median_s", "max_s", "n_drawn", "webgl", "load_avg", "cpu_count"}.
"""
import argparse, json, os, statistics, sys, time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lib_nb.core import shared_path
from lib_nb.graph import load_graph
from lib_nb.analysis import random_graph, modadd_node_data, fourier_labels, node_id
from lib_nb.build import BuildConfig, load_model
from lib_nb.widgets import explore


def modadd_explorer():
    ref, seed0 = shared_path('data/modadd_paper/reference_seed0'), shared_path('data/modadd_paper/seed0')
    if ref is None: return None
    lib = replace(load_graph(ref/'lib_graph.safetensors'), exp_name='LIB seed 0')
    data = labels = None
    if seed0 is not None and (seed0/'model_epoch_60000.pt').exists():
        model, _ = load_model(BuildConfig.from_yaml(ref/'lib_build_config.yaml'), device='cpu')
        data = modadd_node_data(model)
        labels = {node_id(l, i): s for l, v in fourier_labels(data.node_acts(lib), 113, max_dim=20).items() for i, s in enumerate(v)}
    return explore(lib, data=data, labels=labels, compare=replace(load_graph(ref/'pca_graph.safetensors'), exp_name='PCA seed 0'),
                   ablation=ref/'lib_edge_bisect_ablation.json')


def pythia_explorer():
    return explore(random_graph(6, [128, 255, 200, 160, 240, 130], seed=0), threshold=0.05)


def moves(ex):
    "Control name -> (value A, value B) to move between, or a callable doing one move given the step."
    L = len(ex.view.node_layers)
    drawn = lambda: [n for n in ex.node_trace.customdata if ':cluster' not in str(n)]
    m = {'threshold': (ex.threshold, 0.05, 0.1), 'nodes per layer': (ex.nodes_per_layer, ex.nodes_per_layer.max, max(1, ex.nodes_per_layer.max // 2)),
         'layers': (ex.layer_range, (0, L - 1), (0, max(1, L - 2))), 'hide constant': (ex.hide_const, True, False),
         'connected only': (ex.connected, True, False), 'colour clusters': (ex.colour_clusters, True, False),
         'collapse': (ex.collapse, False, True), 'gamma': (ex.gamma, 1.0, 0.5), 'norm': (ex.norm, ex.norm.value, 'log' if ex.norm.value == 'sqrt' else 'sqrt'),
         'edge mode': (ex.mode, 'threshold', 'top k')}
    if len(ex.graph_sel.options) > 1: m['graph'] = (ex.graph_sel, 'LIB', ex.graph_sel.options[1])
    m['click a node'] = lambda k: ex.select(drawn()[k % len(drawn())])
    m['shift-click'] = lambda k: ex.select(drawn()[(3 * k) % len(drawn())], add=True)
    def entry(k):
        lst = ex.in_list if ex.in_list.options else ex.out_list     # a node of the first layer has only outgoing edges
        lst.value = lst.options[k % min(2, len(lst.options))][1]
    m['edge-list entry'] = entry
    m['select drawn'] = lambda k: ex.select_drawn() if k % 2 == 0 else ex.set_selection([])
    m['select cluster'] = lambda k: ex.select_cluster(ex.cluster_pick.options[k % len(ex.cluster_pick.options)][1]) if ex.cluster_pick.options else None
    m['pin'] = lambda k: ex.toggle_pin(drawn()[0])
    return m


def bench(name, ex, repeats):
    for control, mv in moves(ex).items():
        times = []
        for k in range(2 * repeats + 1):
            t0 = time.perf_counter()
            if callable(mv): mv(k)
            else:
                w, a, b = mv
                w.value = b if k % 2 == 0 else a
            times.append(time.perf_counter() - t0)
        if not callable(mv): mv[0].value = mv[1]              # back to the first view for the next control
        print(json.dumps(dict(workload=name, control=control, first_s=round(times[0], 4), median_s=round(statistics.median(times[1:]), 4),
                              max_s=round(max(times[1:]), 4), n_drawn=ex.n_drawn, webgl=ex.webgl,
                              load_avg=[round(x, 2) for x in os.getloadavg()], cpu_count=os.cpu_count())), flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--repeats', type=int, default=5)
    p.add_argument('--only', nargs='*', default=['modadd', 'pythia'])
    a = p.parse_args(argv)
    for name, make in (('modadd', modadd_explorer), ('pythia', pythia_explorer)):
        if name not in a.only: continue
        t0 = time.perf_counter(); ex = make(); t_open = time.perf_counter() - t0
        if ex is None: print(json.dumps(dict(workload=name, skipped='the paper graph is absent'))); continue
        print(json.dumps(dict(workload=name, control='open (explore)', first_s=round(t_open, 3), n_drawn=ex.n_drawn, webgl=ex.webgl,
                              widths=ex.view.widths, load_avg=[round(x, 2) for x in os.getloadavg()])), flush=True)
        bench(name, ex, a.repeats)


if __name__ == '__main__': main()
