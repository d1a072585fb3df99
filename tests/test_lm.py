"""LM builds: saved transformer-lens models round-trip, chunked builds equal one-piece builds (float64, 1e-10),
stochastic sources converge to the exhaustive sums, the benchmark scripts start."""
import os, subprocess, sys
from pathlib import Path

import pytest
import torch

os.environ.setdefault('HF_HUB_OFFLINE', '1')
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def lm():
    return pytest.importorskip('lib_nb.lm')


def _case(lm, arch, tmp, n=4, ctx=4, **over):
    from lib_nb.models import tiny_tlens_model
    hm = tiny_tlens_model(arch, seed=3)
    pt = lm.save_tlens_model(hm, tmp/arch)
    tk = lm.save_tokens(lm.random_tokens(n, ctx, hm.cfg.d_vocab, seed=3), tmp/f'{arch}.npy')
    return hm, lm.lm_build_config(pt, tk, ['ln1.0', 'ln2.0', 'ln1.1', 'unembed'], batch_size=n, **over)


NO_V = ('mean', 'gram', 'Lambda', 'W', 'W_pinv', 'C', 'C_pinv')   # V: defined up to a rotation where Λ repeat


@pytest.mark.parametrize('arch', ['gpt2', 'tiny-stories', 'pythia'])
def test_chunked_equals_whole(lm, arch, tmp_path):
    from lib_nb.build import build_graph
    from lib_nb.core import graph_distance
    hm, cfg = _case(lm, arch, tmp_path)
    g_whole = build_graph(cfg)
    g_parts = build_graph(cfg | dict(batch_size=1, gram_batch_size=3, edge_batch_size=2), max_chunk=5, mem_budget=1)
    assert sorted(g_whole.tensors()) == sorted(g_parts.tensors())
    assert max(graph_distance(g_parts, g_whole, kinds=NO_V).values()) < 1e-10


def test_roundtrip_and_eval(lm, tmp_path):
    from lib_nb.build import build_graph, load_model, BuildConfig
    hm, cfg = _case(lm, 'pythia', tmp_path, eval_type='ce_loss')
    toks = lm.random_tokens(2, 5, hm.cfg.d_vocab, seed=9)
    with torch.no_grad():
        ref = hm(toks)
        torch.testing.assert_close(lm.load_tlens_model(cfg['tlens_model_path'])(toks), ref)
        seq, _ = load_model(BuildConfig.from_dict(cfg), device='cpu')
        torch.testing.assert_close(seq(toks), ref, rtol=1e-9, atol=1e-9)
    g = build_graph(cfg)
    import numpy as np
    ids = torch.tensor(np.load(cfg['dataset']['path'])).long()
    with torch.no_grad(): tl = float(hm(ids, return_type='loss'))
    assert abs(g.extra['eval']['ce_loss'] - tl) < 1e-9


def test_stochastic_sources_converge(lm, tmp_path):
    from functools import partial
    from lib_nb.bases import M_dash
    from lib_nb.build import load_model, BuildConfig
    from lib_nb.core import seeded_generator, rel_diff
    import numpy as np
    _, cfg = _case(lm, 'gpt2', tmp_path, n=3, ctx=6)
    seq, _ = load_model(BuildConfig.from_dict(cfg), device='cpu')
    acts = seq.pre(torch.tensor(np.load(cfg['dataset']['path'])).long()[:, :-1])
    F = partial(seq.section, 0)
    exact = M_dash(F, acts)[0]
    err = {R: rel_diff(M_dash(F, acts, n_sources_pos=R, generator=seeded_generator(R))[0], exact) for R in (8, 512)}
    assert err[512] < 0.15 and err[8] > 3 * err[512]


def test_memory_plan_refuses_tiny_budget(lm, tmp_path):
    from lib_nb.build import load_model, BuildConfig
    from lib_nb.core import LibConfigError
    from lib_nb.cost import plan_memory
    _, cfg = _case(lm, 'gpt2', tmp_path)
    seq, _ = load_model(BuildConfig.from_dict(cfg), device='cpu')
    plan = plan_memory(seq, 4, 4, max_memory_gb=0.01)
    assert plan.est_peak_bytes <= 0.01 * 2**30 and min(plan.max_chunk) >= 1
    with pytest.raises(LibConfigError, match='max_memory_gb'): plan_memory(seq, 4, 4, max_memory_gb=1e-7)


def test_bench_scripts_start():
    for s in ('bench_lm.py', 'run_all.py'):
        r = subprocess.run([sys.executable, str(ROOT/'benchmarks'/s), '--help'], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and 'usage' in r.stdout


def test_max_memory_gb_build(lm, tmp_path):
    from lib_nb.build import build_graph
    from lib_nb.core import graph_distance
    _, cfg = _case(lm, 'tiny-stories', tmp_path)
    g = build_graph(cfg)
    t = build_graph(cfg | dict(max_memory_gb=0.0002))
    assert t.extra['memory_plan']['batch_size'] < cfg['batch_size']
    assert max(graph_distance(t, g, kinds=NO_V).values()) < 1e-10


def _generic_vjp(F, x, **kw):
    "The generic path: vmap of torch.func.vjp, ignoring any exact `pullback` the section carries and its options (as `batched_vjp` does)."
    from torch.func import vjp, vmap
    out, fn = vjp(F, x)
    return out, lambda cot: vmap(fn)(cot)[0]


@pytest.mark.parametrize('arch', ['gpt2', 'tiny-stories', 'pythia'])
@pytest.mark.parametrize('sources', ['exact', 'stochastic'])
def test_pullback_build_equals_generic(lm, arch, sources, tmp_path, monkeypatch):
    "The whole build with the exact batched pull-backs equals the vmap-of-vjp build: exact mode, and the same stochastic draws."
    import lib_nb.bases, lib_nb.edges
    from lib_nb.build import build_graph
    from lib_nb.core import graph_distance
    over = dict(n_stochastic_sources_basis_pos=2, n_stochastic_sources_basis_hidden=3, n_stochastic_sources_edges=2,
                integration_method='trapezoidal', n_intervals=1) if sources == 'stochastic' else {}
    hm, cfg = _case(lm, arch, tmp_path, n=3, ctx=5, **over)
    cfg['node_layers'] = ['ln1.0', 'ln2.0', 'ln1.1', 'ln_final', 'unembed']   # attention, MLP and a whole block
    g_fast = build_graph(cfg)
    monkeypatch.setattr(lib_nb.bases, 'batched_vjp', _generic_vjp)
    monkeypatch.setattr(lib_nb.edges, 'batched_vjp', _generic_vjp)
    g_gen = build_graph(cfg)
    d = graph_distance(g_fast, g_gen, kinds=NO_V)
    assert max(d.values()) < 1e-10, d
