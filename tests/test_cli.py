"""The console scripts as a shell user runs them: exit 0 and a short summary on success; on a user error or a
defective file, a non-zero exit, one line on stderr naming the problem (no traceback), nothing written, and no code
from the file run."""
import os, pickle, subprocess, sys
from pathlib import Path

import numpy as np
import pytest, torch, yaml

os.environ.setdefault('HF_HUB_OFFLINE', '1')
BIN = Path(sys.executable).parent


def run(script: str, *args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN/script), *map(str, args)], capture_output=True, text=True, timeout=600, cwd=cwd)


def one_line_error(r: subprocess.CompletedProcess, *words: str):
    "A failed run: non-zero exit, exactly one line on stderr, holding `words`, and no traceback."
    assert r.returncode != 0, r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and 'Traceback' not in r.stderr, r.stderr[-3000:]
    for w in words: assert w in lines[0], (w, lines[0])
    return lines[0]


@pytest.fixture(scope='module')
def tiny(tmp_path_factory) -> Path:
    "The shared tiny modular-addition checkpoint (model.pt + config.yaml) and its build YAML."
    from lib_nb.models import save_tiny_modadd
    d = tmp_path_factory.mktemp('tiny')
    save_tiny_modadd(d, p=7, d_model=8, d_mlp=16, frac_train=0.6)
    ds = yaml.safe_load((d/'config.yaml').read_text())['dataset']
    cfg = dict(exp_name='tiny', tlens_model_path='model.pt', out_dir=None, last_pos_module_type='add_resid1',
               dataset=dict(ds, return_set='train'), node_layers=['ln1.0', 'ln2.0', 'unembed', 'output'],
               rotate_final_node_layer=False, batch_size=16, dtype='float64', truncation_threshold=1e-12)
    (d/'lib_build.yaml').write_text(yaml.safe_dump(cfg))
    return d/'lib_build.yaml'


def variant(tiny: Path, tmp: Path, name: str, checkpoint: bytes | None = None, **changes) -> Path:
    "A copy of the tiny model folder with its checkpoint's bytes replaced and/or its build YAML changed."
    d = tmp/name; d.mkdir()
    (d/'config.yaml').write_bytes((tiny.parent/'config.yaml').read_bytes())
    (d/'model.pt').write_bytes(checkpoint if checkpoint is not None else (tiny.parent/'model.pt').read_bytes())
    (d/'lib_build.yaml').write_text(yaml.safe_dump({**yaml.safe_load(tiny.read_text()), **changes}))
    return d/'lib_build.yaml'


def test_lib_build_succeeds_and_refuses_to_overwrite(tiny, tmp_path):
    r = run('lib_build', tiny, '--out', tmp_path/'g', '-q')
    assert r.returncode == 0 and r.stderr == '', r.stderr[-3000:]
    assert r.stdout.count('\n') == 1 and 'graph tiny (edges), widths ln1.0' in r.stdout and str(tmp_path/'g') in r.stdout
    assert sorted(p.name for p in (tmp_path/'g').iterdir()) == ['graph.json', 'graph.safetensors']
    before = (tmp_path/'g'/'graph.json').read_bytes()
    r = run('lib_build', tiny, '--out', tmp_path/'g', '-q')
    assert r.returncode == 1 and 'already holds a result' in r.stderr and 'Traceback' not in r.stderr
    assert (tmp_path/'g'/'graph.json').read_bytes() == before


class RunsCode:
    "Unpickling this runs `touch <marker>`; a loader that never unpickles code leaves no marker."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self): return (os.system, (f'touch {self.marker}',))


def test_lib_build_defective_files(tiny, tmp_path):
    good = (tiny.parent/'model.pt').read_bytes()
    sd = torch.load(tiny.parent/'model.pt', weights_only=True)
    sd['blocks.0.mlp.W_in'][0, 0] = float('nan')
    torch.save(sd, tmp_path/'nan.pt')
    marker = tmp_path/'pwned'
    with open(tmp_path/'evil.pt', 'wb') as f: pickle.dump({'embed.W_E': RunsCode(marker)}, f)
    cases = {                                                   # name: (checkpoint bytes, words the one line must hold)
        'empty': (b'', ['model.pt', 'empty']),
        'truncated': (good[:len(good) // 2], ['model.pt', 'truncated']),
        'text': (b'd_model: 128\n', ['model.pt', 'plain text']),
        'pickle': ((tmp_path/'evil.pt').read_bytes(), ['model.pt', 'refused']),
        'nan': ((tmp_path/'nan.pt').read_bytes(), ['blocks.0.mlp.W_in', 'NaN']),
    }
    for name, (blob, words) in cases.items():
        cfg = variant(tiny, tmp_path, name, blob)
        one_line_error(run('lib_build', cfg, '--out', tmp_path/f'out_{name}', '-q'), *words)
        assert not (tmp_path/f'out_{name}').exists(), name
    assert not marker.exists()                                  # the pickle's code never ran


def test_lib_build_defective_configs_and_inputs(tiny, tmp_path):
    (tmp_path/'syntax.yaml').write_text('exp_name: x\nnode_layers: [ln1.0, output\n')
    one_line_error(run('lib_build', tmp_path/'syntax.yaml', '-q'), 'syntax.yaml', 'line', 'column')
    (tmp_path/'empty.yaml').write_text('')
    one_line_error(run('lib_build', tmp_path/'empty.yaml', '-q'), 'empty.yaml', 'empty')
    one_line_error(run('lib_build', variant(tiny, tmp_path, 'field', basis_formula='pca'), '-q'), 'basis_formula', "'pca'")
    one_line_error(run('lib_build', variant(tiny, tmp_path, 'typo', bsize=3), '-q'), 'bsize', 'unknown field')
    one_line_error(run('lib_build', tmp_path/'nowhere.yaml', '-q'), 'nowhere.yaml', 'no such file')
    (tmp_path/'broken_result').mkdir()
    (tmp_path/'broken_result'/'graph.json').write_text('{"exp_name": ')
    (tmp_path/'broken_result'/'graph.safetensors').write_bytes(b'\0' * 16)
    resume = variant(tiny, tmp_path, 'resume', gram_matrices_path=str(tmp_path/'broken_result'))
    one_line_error(run('lib_build', resume, '--out', tmp_path/'r', '-q'), 'gram_matrices_path')
    assert not (tmp_path/'r').exists()


def test_lib_build_defective_tokens(tmp_path):
    "An LM config whose token file is empty, or holds a pickle, gets the one line too."
    from lib_nb.lm import save_tlens_model, lm_build_config
    from lib_nb.models import tiny_tlens_model
    pt = save_tlens_model(tiny_tlens_model('gpt2', seed=0), tmp_path/'lm')
    for name, write in {'empty.npy': lambda p: p.write_bytes(b''),
                        'objects.npy': lambda p: np.save(p, np.array([{'a': 1}], dtype=object), allow_pickle=True),
                        'floats.npy': lambda p: np.save(p, np.random.default_rng(0).random((4, 5)))}.items():
        write(tmp_path/name)
        (tmp_path/f'{name}.yaml').write_text(yaml.safe_dump(lm_build_config(pt, tmp_path/name, ['ln1.0', 'unembed'])))
        one_line_error(run('lib_build', tmp_path/f'{name}.yaml', '--out', tmp_path/f'out_{name}', '-q'), name)
        assert not (tmp_path/f'out_{name}').exists()


def test_lib_combine(tiny, tmp_path):
    r = run('lib_build', tiny, '--partial', tmp_path/'parts', '-q')
    assert r.returncode == 0, r.stderr[-3000:]
    r = run('lib_combine', tmp_path/'all', tmp_path/'parts')
    assert r.returncode == 0 and 'ranks combined' in r.stdout, r.stderr[-3000:]
    assert (tmp_path/'all'/'graph.json').exists()
    one_line_error(run('lib_combine', tmp_path/'none', tmp_path/'nowhere'), 'nowhere')
    assert not (tmp_path/'none').exists()


def test_lib_build_mnist_from_idx_files(tmp_path):
    """An original-style MNIST config (`dataset_type: torchvision`, `name: MNIST`) builds an MLP graph from idx files
    written here (via `path:`, and via `$LIB_NB_DATA_ROOT/MNIST/raw`); without the files, one line names the folder
    and the four file names."""
    from lib_nb.data import MNIST_FILES, write_idx
    from lib_nb.models import MLP, MLPConfig, save_mlp
    from lib_nb.core import seeded_generator
    rng = np.random.default_rng(0)
    raw = tmp_path/'root'/'MNIST'/'raw'; raw.mkdir(parents=True)
    for stem, n in (('train', 40), ('t10k', 10)):
        write_idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), raw/f'{stem}-images-idx3-ubyte')
        write_idx(rng.integers(0, 10, n, dtype=np.uint8), raw/f'{stem}-labels-idx1-ubyte.gz')
    pt = save_mlp(MLP(MLPConfig([784, 16, 10], 'relu'), generator=seeded_generator(0)), tmp_path/'mlp')
    cfg = dict(exp_name='mnist', mlp_path=str(pt), node_layers=['layers.0', 'layers.1', 'output'], rotate_final_node_layer=False,
               batch_size=20, truncation_threshold=1e-10, dtype='float64', center=True, eval_type='accuracy',
               dataset=dict(dataset_type='torchvision', name='MNIST', return_set='train', path=str(raw)))
    (tmp_path/'mnist.yaml').write_text(yaml.safe_dump(cfg))
    r = run('lib_build', tmp_path/'mnist.yaml', '--out', tmp_path/'g', '-q')
    assert r.returncode == 0 and 'graph mnist (edges), widths layers.0' in r.stdout, r.stderr[-3000:]
    from lib_nb.graph import load_graph
    g = load_graph(tmp_path/'g')
    from lib_nb.data import read_idx
    x = torch.from_numpy(read_idx(raw/'train-images-idx3-ubyte').reshape(40, -1).astype(np.float32) / 255).double()  # ToTensor: float32
    assert torch.allclose(g.mean['layers.0'][:-1], x.mean(0), rtol=1e-12, atol=1e-14)     # the pixels, scaled as ToTensor does
    del cfg['dataset']['path']
    (tmp_path/'root.yaml').write_text(yaml.safe_dump(cfg))
    env_run = subprocess.run([str(BIN/'lib_build'), str(tmp_path/'root.yaml'), '--out', str(tmp_path/'g2'), '-q'], capture_output=True,
                             text=True, timeout=600, env={**os.environ, 'LIB_NB_DATA_ROOT': str(tmp_path/'root')})
    assert env_run.returncode == 0, env_run.stderr[-3000:]
    (tmp_path/'missing.yaml').write_text(yaml.safe_dump({**cfg, 'dataset': {**cfg['dataset'], 'path': str(tmp_path/'empty_dir')}}))
    (tmp_path/'empty_dir').mkdir()
    line = one_line_error(run('lib_build', tmp_path/'missing.yaml', '--out', tmp_path/'g3', '-q'), str(tmp_path/'empty_dir'), *MNIST_FILES)
    assert not (tmp_path/'g3').exists()


def test_lib_ablate(tiny, tmp_path):
    """`lib_ablate` exits 0 with a one-line summary, on a lib_nb result and on the original's `.pt` layout of the same
    graph (equal results); a bad config, a missing result and a `.pt` that would run code get one line and exit 2."""
    import json
    from lib_nb.graph import load_graph
    r = run('lib_build', tiny, '--out', tmp_path/'g', '-q')
    assert r.returncode == 0, r.stderr[-3000:]
    load_graph(tmp_path/'g').save_pt(tmp_path/'tiny_rib_graph.pt')
    abl = dict(exp_name='tiny', ablation_type='edge', rib_results_path=str(tmp_path/'g'), out_dir=str(tmp_path/'a'),
               schedule=dict(schedule_type='bisect', score_target_difference=0.01), ablation_node_layers=['ln2.0', 'unembed'],
               dataset=dict(dataset_type='modular_arithmetic', return_set='test'), batch_size=64, dtype='float64',
               tlens_model_path=str(tiny.parent/'model.pt'))
    results = {}
    for name, res in (('dir', tmp_path/'g'), ('pt', tmp_path/'tiny_rib_graph.pt')):
        (tmp_path/f'{name}.yaml').write_text(yaml.safe_dump({**abl, 'rib_results_path': str(res), 'out_dir': str(tmp_path/name)}))
        r = run('lib_ablate', tmp_path/f'{name}.yaml', '-q')
        assert r.returncode == 0 and r.stderr == '', r.stderr[-3000:]
        assert r.stdout.count('\n') == 1 and 'edge ablation of 1 layer(s)' in r.stdout
        results[name] = json.loads((tmp_path/name/'tiny_edge_ablation_results.json').read_text())
    assert results['dir']['results'] == results['pt']['results'] and results['dir']['n_edges_required'] == results['pt']['n_edges_required']
    (tmp_path/'typo.yaml').write_text(yaml.safe_dump({**abl, 'ablation_type': 'pca'}))
    one_line_error(run('lib_ablate', tmp_path/'typo.yaml', '-q'), 'ablation_type', "'pca'")
    (tmp_path/'gone.yaml').write_text(yaml.safe_dump({**abl, 'rib_results_path': str(tmp_path/'nowhere')}))
    one_line_error(run('lib_ablate', tmp_path/'gone.yaml', '-q'), 'nowhere')
    marker = tmp_path/'pwned'
    with open(tmp_path/'evil_rib_graph.pt', 'wb') as f: pickle.dump({'edges': RunsCode(marker)}, f)
    (tmp_path/'evil.yaml').write_text(yaml.safe_dump({**abl, 'rib_results_path': str(tmp_path/'evil_rib_graph.pt'),
                                                      'out_dir': str(tmp_path/'evil_out')}))
    one_line_error(run('lib_ablate', tmp_path/'evil.yaml', '-q'), 'evil_rib_graph.pt', 'refused')
    assert not marker.exists() and not (tmp_path/'evil_out').exists()
