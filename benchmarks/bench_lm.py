"""Benchmark of LIB builds on transformer-lens-shaped language models: one JSON line per workload and phase.

Workloads (defined in ../shared/bench/ANCHORS.md; random weights from `HookedTransformer` initialisation after
`torch.manual_seed(0)`, float64, random token ids from a `torch.Generator` seeded 0):

* `pythia14m_random_n50_ctx32`   Pythia-14m shape, 50 x 32 tokens, R_p 10, R_h 50, deterministic edges
* `pythia14m_random_n100_ctx128` the same, 100 x 128 tokens, R_e 10
* `gpt2small_random_n60_ctx128`  GPT-2-small shape (12 layers, d_model 768), 60 x 128 tokens, node layers
  ln1.6, ln2.6, ln1.7, R_p 10, R_h 50, R_e 10 (the original code's GPT-2 run: 7.3 min, 66 GB on an 80 GB GPU)

    python benchmarks/bench_lm.py [--workload NAME|all] [--quick] [--n N --ctx CTX] [--device cpu|cuda]
                                  [--max-memory-gb GB] [--threads T] [--peak-tflops TF]

`--quick` shrinks every workload to 8 samples x 16 tokens (a smoke run); `--n/--ctx` set the size explicitly.
Each line: {"workload", "phase", "seconds", "peak_mem_mb", "device", "machine", ...}; phases are build_graph's
(load, activations, grams, bases, edges) plus "gemm" (this machine's float64 GEMM rate, a large `torch.mm` timed in
the same run, before and after the build), "wall" and "flops" (the counted floating-point operations of the bases and
edges phases, their GFLOP/s, the fraction of the measured GEMM rate, and on a GPU the fraction of its peak rate).
Each line also carries `os.getloadavg()` (the machine is shared: timings are only comparable within one run).
"""
import argparse, json, os, platform, sys, tempfile, time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')

PYTHIA14M = dict(n_layers=6, d_model=128, d_head=32, n_heads=4, d_mlp=512, d_vocab=50304, n_ctx=2048, act_fn='gelu',
                 normalization_type='LNPre', positional_embedding_type='rotary', rotary_dim=8, parallel_attn_mlp=True,
                 original_architecture='GPTNeoXForCausalLM')
GPT2SMALL = dict(n_layers=12, d_model=768, d_head=64, n_heads=12, d_mlp=3072, d_vocab=50257, n_ctx=1024, act_fn='gelu_new',
                 normalization_type='LNPre', original_architecture='GPT2LMHeadModel')
COMMON = dict(rotate_final_node_layer=True, truncation_threshold=1e-10, batch_size=25, gram_batch_size=40, edge_batch_size=50,
              basis_formula='jacobian', edge_formula='squared', center=True, n_stochastic_sources_basis_pos=10,
              n_stochastic_sources_basis_hidden=50, dtype='float64')
PYTHIA_LAYERS = ['ln1.1', 'ln2.1', 'ln1.2', 'ln2.2', 'ln1.3', 'unembed']
WORKLOADS = {
    'pythia14m_random_n50_ctx32': (PYTHIA14M, 50, 32, dict(node_layers=PYTHIA_LAYERS)),
    'pythia14m_random_n100_ctx128': (PYTHIA14M, 100, 128, dict(node_layers=PYTHIA_LAYERS, n_stochastic_sources_edges=10)),
    'gpt2small_random_n60_ctx128': (GPT2SMALL, 60, 128, dict(node_layers=['ln1.6', 'ln2.6', 'ln1.7'], n_stochastic_sources_edges=10,
                                                            batch_size=20, gram_batch_size=20, edge_batch_size=20)),
}
# dense peak rates (TFLOP/s) by device name and dtype, for the fraction-of-peak line (override with --peak-tflops)
PEAK_TFLOPS = {'H100': dict(float64=67, float32=67, bfloat16=989), 'H200': dict(float64=67, float32=67, bfloat16=989),
               'A100': dict(float64=19.5, float32=19.5, bfloat16=312)}


def make_model(arch: dict, seed: int = 0):
    "A float64 HookedTransformer of shape `arch`, initialised by transformer-lens after torch.manual_seed(seed)."
    import warnings, torch
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return HookedTransformer(HookedTransformerConfig(**arch, dtype=torch.float64, device='cpu')).eval()


def gemm_rate(device: str, dtype=None, n: int = 3000, reps: int = 3) -> float:
    "Best of `reps` timed `torch.mm` of two `n × n` matrices (float64 unless `dtype`): the machine's GEMM rate in FLOP/s."
    import torch
    dtype = dtype or torch.float64
    a = torch.randn(n, n, dtype=dtype, device=device); b = torch.randn(n, n, dtype=dtype, device=device)
    best = float('inf')
    for _ in range(reps + 1):                                  # the first call warms up
        if device.startswith('cuda'): torch.cuda.synchronize()
        t = time.perf_counter(); a @ b
        if device.startswith('cuda'): torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best


def run(name: str, n: int, ctx: int, device: str, max_memory_gb=None, peak_tflops=None, count_flops=True, emit_extra=None):
    import torch
    import lib_nb.build as B
    from lib_nb.lm import save_tlens_model, random_tokens, save_tokens, lm_build_config
    from lib_nb.cost import jacobian_flops
    arch, _, _, over = WORKLOADS[name]
    machine = (torch.cuda.get_device_name(torch.device(device)) if device.startswith('cuda') else
               f'{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads')
    wl = name if (n, ctx) == WORKLOADS[name][1:3] else f'{name}@n{n}_ctx{ctx}'

    def emit(phase, seconds, peak, **more):
        print(json.dumps(dict(workload=wl, phase=phase, seconds=round(seconds, 4), peak_mem_mb=round(peak, 1), device=device,
                              machine=machine, loadavg=[round(v, 2) for v in os.getloadavg()], **more)), flush=True)

    t = time.perf_counter(); gemm0 = gemm_rate(device)
    emit('gemm', time.perf_counter() - t, B.peak_memory_mb(), gflops_per_s=round(gemm0 / 1e9, 2), when='before the build')

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        pt = save_tlens_model(make_model(arch), Path(tmp)/'model')
        tk = save_tokens(random_tokens(n, ctx, arch['d_vocab'], seed=0), Path(tmp)/'tokens.npy')
        emit('make_model', time.perf_counter() - t, B.peak_memory_mb())
        cfg = lm_build_config(pt, tk, exp_name=wl, **(COMMON | over))
        if max_memory_gb is not None:
            if 'max_memory_gb' not in B.BuildConfig.model_fields:
                sys.exit('this lib_nb.build has no max_memory_gb field yet')
            cfg['max_memory_gb'] = max_memory_gb
        cfg = B.BuildConfig.from_dict(cfg)
        t = time.perf_counter()
        g = B.build_graph(cfg, device=device, on_phase=emit)
        wall = time.perf_counter() - t
        emit('wall', wall, g.extra['peak_mem_mb'], widths=g.widths)
        t = time.perf_counter(); gemm1 = gemm_rate(device)
        emit('gemm', time.perf_counter() - t, B.peak_memory_mb(), gflops_per_s=round(gemm1 / 1e9, 2), when='after the build')
        gemm = (gemm0 + gemm1) / 2
        if count_flops:
            model, _ = B.load_model(cfg, device=device)
            from lib_nb.data import load_dataset, dataset_inputs_labels
            x, _ = dataset_inputs_labels(load_dataset(cfg.dataset))
            fl = jacobian_flops(model, cfg, g, x[:cfg.batch_size], n)
            rates = {k: fl[k] / g.timings[k] for k in fl if g.timings.get(k)}
            peak = peak_tflops
            if peak is None and device.startswith('cuda'):
                peak = next((v.get(cfg.dtype) for k, v in PEAK_TFLOPS.items() if k in machine), None)
            frac = {k: r / (peak * 1e12) for k, r in rates.items()} if peak else None
            emit('flops', sum(g.timings.get(k, 0) for k in fl), g.extra['peak_mem_mb'], flops=fl,
                 phase_seconds={k: round(g.timings[k], 3) for k in fl if g.timings.get(k)},
                 gflops_per_s={k: round(r / 1e9, 2) for k, r in rates.items()}, gemm_gflops_per_s=round(gemm / 1e9, 2),
                 fraction_of_gemm={k: round(r / gemm, 3) for k, r in rates.items()}, peak_tflops=peak,
                 fraction_of_peak=frac)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--workload', default='all', help=f'one of {list(WORKLOADS)} or all')
    p.add_argument('--quick', action='store_true', help='8 samples x 16 tokens per workload')
    p.add_argument('--n', type=int, help='samples'); p.add_argument('--ctx', type=int, help='tokens per sample')
    p.add_argument('--device', help='torch device (default: lib_nb.core.default_device())')
    p.add_argument('--max-memory-gb', type=float, help="the build's memory budget (max_memory_gb)")
    p.add_argument('--threads', type=int, help='torch.set_num_threads before the run')
    p.add_argument('--peak-tflops', type=float, help="the device's peak rate for the run dtype (default: a table for GPUs)")
    p.add_argument('--no-flops', action='store_true', help='skip counting the operations')
    a = p.parse_args(argv)
    import torch
    from lib_nb.core import default_device
    if a.threads: torch.set_num_threads(a.threads)
    names = list(WORKLOADS) if a.workload == 'all' else [a.workload]
    for name in names:
        if name not in WORKLOADS: sys.exit(f'unknown workload {name!r}; use one of {list(WORKLOADS)}')
        n, ctx = WORKLOADS[name][1:3]
        if a.quick: n, ctx = 8, 16
        n, ctx = a.n or n, a.ctx or ctx
        run(name, n, ctx, str(a.device or default_device()), a.max_memory_gb, a.peak_tflops, not a.no_flops)


if __name__ == '__main__':
    main()
