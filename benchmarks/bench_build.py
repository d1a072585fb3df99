"""Benchmark of `lib_nb.build.build_graph`: one JSON line per phase.

Default workload `modadd_paper`: the paper's seed-0 build, exactly
`../shared/data/modadd_paper/reference_seed0/lib_build_config.yaml` (float64, jacobian basis, squared edges).
`--config` runs another YAML (workload = its exp_name unless `--workload` is given). Nothing is written to disk.

    python benchmarks/bench_build.py [--config CONFIG.yaml] [--device cpu|cuda] [--repeat N]

Each line: {"workload", "phase", "seconds", "peak_mem_mb", "device", "machine", "cpu_seconds"}; phases are those of build_graph (load,
activations, eval, grams, bases, edges) plus "import" (importing torch and lib_nb.build, first repeat only) and
"wall" (the whole build_graph call: everything after the imports). Peak memory is the
process's maximum RSS on CPU and torch.cuda.max_memory_allocated on a GPU. cpu_seconds (process CPU time since the
previous line) tells a busy shared machine's wall time apart from the work done.
"""
import argparse, json, os, platform, sys, time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--config', help='a build YAML (default: the paper seed-0 LIB build)')
    p.add_argument('--workload', help='name printed in each line')
    p.add_argument('--device', help='torch device (default: lib_nb.core.default_device())')
    p.add_argument('--repeat', type=int, default=1, help='run the build this many times (one set of lines each)')
    p.add_argument('--threads', type=int, help='torch.set_num_threads before the run')
    a = p.parse_args(argv)
    t0, cpu0 = time.perf_counter(), time.process_time()
    import torch
    import lib_nb.build as B
    from lib_nb.core import shared_path, default_device
    t_import = time.perf_counter() - t0
    if a.threads: torch.set_num_threads(a.threads)
    if a.config is None:
        ref = shared_path('data/modadd_paper/reference_seed0/lib_build_config.yaml')
        if ref is None: sys.exit('../shared/data/modadd_paper is absent; pass --config')
        cfg, workload = B.BuildConfig.from_yaml(ref), a.workload or 'modadd_paper'
    else:
        cfg = B.BuildConfig.from_yaml(a.config); workload = a.workload or cfg.exp_name
    cfg = cfg.replace(out_dir=None)
    device = str(a.device or default_device())

    machine = (torch.cuda.get_device_name(torch.device(device)) if device.startswith('cuda') else
               f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads')

    last_cpu = [cpu0]

    def emit(phase, seconds, peak):
        "One JSON line; cpu_seconds is the process CPU time since the previous line (a proxy on a busy machine)."
        now = time.process_time(); cpu, last_cpu[0] = now - last_cpu[0], now
        print(json.dumps(dict(workload=workload, phase=phase, seconds=round(seconds, 4), peak_mem_mb=round(peak, 1),
                              device=device, machine=machine, cpu_seconds=round(cpu, 3))), flush=True)

    for r in range(a.repeat):
        if r == 0: emit('import', t_import, B.peak_memory_mb()); last_cpu[0] = time.process_time()
        t = time.perf_counter()
        g = B.build_graph(cfg, device=device, on_phase=emit)
        wall = time.perf_counter() - t
        emit('wall', wall, g.extra['peak_mem_mb'])


if __name__ == '__main__':
    main()
