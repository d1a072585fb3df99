"""The graph explorer in a real JupyterLab, driven by Chromium through Playwright.

Starts `.venv/bin/jupyter lab` on 127.0.0.1 with a throwaway token and throwaway config/data/runtime/settings
folders, writes a notebook that shows the explorer on the paper's seed-0 LIB graph and on a random graph of
10 node layers x 256 features, runs it in Chromium (Debian's /usr/bin/chromium; never `playwright install`),
moves the threshold slider, hovers and clicks a node, and measures the redraw time of the large graph. Then the
issue-18 steps: selects a cluster and runs the faithfulness check, reading the score from the page (or, where this
lib_nb has no `lib_nb.ablation.faithfulness` or the model is absent, the line that says what is missing); clicks an
entry of the node panel's edge list and sees the selection move; labels and pins a node, exports the annotations,
and reloads them with `explore(graph, annotations=PATH)` in a new cell.
Screenshots go to artifacts/widget_screenshots/. Skips when Chromium or Playwright is missing, except under
CI=true where that is a failure.
"""
import json, os, re, secrets, shutil, signal, socket, subprocess, sys, time, urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get('LIB_NB_CHROMIUM', '/usr/bin/chromium')
SHOTS = ROOT / 'artifacts' / 'widget_screenshots'
CHROME_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
               '--disable-component-update', '--disable-sync']
REDRAW_LIMIT_S = 1.0

# End-to-end in a real browser on 2 shared cores: a missed plotly update under load is retried twice (see the
# closing note of the widget issue); a failure in all three runs fails CI.
pytestmark = [pytest.mark.browser, pytest.mark.flaky(reruns=2, reruns_delay=5)]


def _missing(reason):
    if os.environ.get('CI', '').lower() == 'true': pytest.fail(f'CI=true but {reason}')
    pytest.skip(reason)


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def _get(url, token, method='GET', timeout=5):
    req = urllib.request.Request(url, method=method, headers={'Authorization': f'token {token}'})
    with urllib.request.urlopen(req, timeout=timeout) as r: return r.read()


def _our_pids(marker):
    "Pids of live processes whose command line mentions `marker` (our throwaway folder)."
    pids = []
    for d in Path('/proc').iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid(): continue
        try: cmd = (d / 'cmdline').read_bytes().replace(b'\0', b' ').decode(errors='replace')
        except OSError: continue
        if marker in cmd: pids.append(int(d.name))
    return pids


NOTEBOOK_CELLS = [
    # warm-up: the browser loads plotly's widget code once before the explorers need it
    """import plotly.graph_objects as go
from lib_nb.widgets import figure_widget
warm = figure_widget(go.Figure(go.Scatter(x=[0, 1], y=[0, 1])))
warm""",
    """import os; os.environ.setdefault('HF_HUB_OFFLINE', '1')
from dataclasses import replace
from pathlib import Path
from lib_nb.graph import load_graph
from lib_nb.build import BuildConfig, load_model
from lib_nb.analysis import random_graph, modadd_node_data, fourier_labels, node_id
from lib_nb.widgets import explore
REF, SEED0 = Path({ref!r}), Path({seed0!r})
lib = replace(load_graph(REF/'lib_graph.safetensors'), exp_name='LIB seed 0')
pca = replace(load_graph(REF/'pca_graph.safetensors'), exp_name='PCA seed 0')
data = None
if (SEED0/'model_epoch_60000.pt').exists():
    model, _ = load_model(BuildConfig.from_yaml(REF/'lib_build_config.yaml'), device='cpu')
    data = modadd_node_data(model)
    labels = {{node_id(l, i): s for l, v in fourier_labels(data.node_acts(lib), 113, max_dim=20).items() for i, s in enumerate(v)}}
else: labels = None
paper = explore(lib, data=data, compare=pca, labels=labels, ablation=REF/'lib_edge_bisect_ablation.json', height=560)
paper.add_class('explorer-paper')
paper""",
    """big = explore(random_graph(10, 256, seed=0), nodes_per_layer=256, threshold=0.06, height=500)
big.add_class('explorer-big')
big""",
    # run later, after the annotations were saved: a fresh explorer restores them
    """again = explore(lib, data=data, compare=pca, labels=labels, ablation=REF/'lib_edge_bisect_ablation.json', height=450,
                annotations='annotations.json')
again.add_class('explorer-again')
again""",
]


def _write_notebook(path, ref, seed0):
    cells = [dict(cell_type='code', execution_count=None, metadata={}, outputs=[],
                  source=c.format(ref=str(ref), seed0=str(seed0)), id=f'cell{i}') for i, c in enumerate(NOTEBOOK_CELLS)]
    nb = dict(cells=cells, metadata=dict(kernelspec=dict(name='python3', display_name='Python 3', language='python')),
              nbformat=4, nbformat_minor=5)
    path.write_text(json.dumps(nb))


@pytest.fixture
def lab(tmp_path):
    "A JupyterLab server on 127.0.0.1 with throwaway folders; shut down and checked gone afterwards."
    jupyter = ROOT / '.venv' / 'bin' / 'jupyter'
    if not jupyter.exists(): jupyter = Path(sys.executable).parent / 'jupyter'
    if not jupyter.exists(): _missing('jupyter lab is not installed in .venv')
    token, port = secrets.token_hex(16), _free_port()
    work = tmp_path / 'work'; work.mkdir()
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'JUPYTER_CONFIG_DIR': str(tmp_path / 'config'),
           'JUPYTER_DATA_DIR': str(tmp_path / 'data'), 'JUPYTER_RUNTIME_DIR': str(tmp_path / 'runtime'),
           'JUPYTERLAB_SETTINGS_DIR': str(tmp_path / 'settings'), 'JUPYTERLAB_WORKSPACES_DIR': str(tmp_path / 'workspaces'),
           'IPYTHONDIR': str(tmp_path / 'ipython'), 'JUPYTER_PLATFORM_DIRS': '1', 'PYTHONPATH': str(ROOT)}
    cmd = [str(jupyter), 'lab', '--no-browser', '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}',
           '--ServerApp.port_retries=0', f'--IdentityProvider.token={token}', f'--ServerApp.root_dir={work}',
           '--LabApp.news_url=None', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate',
           '--ServerApp.disable_check_xsrf=True'] + (['--allow-root'] if os.geteuid() == 0 else [])
    (tmp_path / 'config' / 'labconfig').mkdir(parents=True)
    (tmp_path / 'config' / 'labconfig' / 'page_config.json').write_text(
        json.dumps({'disabledExtensions': {'@jupyterlab/apputils-extension:announcements': True}}))
    log = open(tmp_path / 'jupyter.log', 'w')
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f'http://127.0.0.1:{port}'
    try:
        for _ in range(120):
            if proc.poll() is not None: break
            try: _get(f'{base}/api/status', token); break
            except Exception: time.sleep(0.5)
        else: pass
        if proc.poll() is not None:
            pytest.fail(f'jupyter lab exited early:\n{(tmp_path / "jupyter.log").read_text()[-3000:]}')
        yield dict(base=base, token=token, work=work, tmp=tmp_path)
    finally:
        try:
            for k in json.loads(_get(f'{base}/api/kernels', token)):
                _get(f'{base}/api/kernels/{k["id"]}', token, method='DELETE')
            _get(f'{base}/api/shutdown', token, method='POST')
        except Exception: pass
        try: proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try: proc.wait(timeout=10)
            except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait()
        log.close()
        left = _our_pids(str(tmp_path))          # kernels carry our runtime folder in their command line
        for pid in left:
            try: os.kill(pid, signal.SIGKILL)
            except ProcessLookupError: pass
        assert not left, f'processes left behind after shutdown: {left}'


# in-page helpers (plotly's graph div is the `.js-plotly-plot` element inside each explorer)
WS_SPY = """(() => {   // time-stamp large websocket messages (widget updates) to split the redraw time
  const Orig = window.WebSocket;
  window.__ws_big = [];
  window.WebSocket = function(...args) {
    const ws = new Orig(...args);
    ws.addEventListener('message', (e) => {
      const n = (e.data && (e.data.length || e.data.byteLength || e.data.size)) || 0;
      if (n > 500) window.__ws_big.push([performance.now(), n]);
    });
    return ws;
  };
  window.WebSocket.prototype = Orig.prototype;
  Object.assign(window.WebSocket, {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3});
})();"""
JS_COUNT = """(root) => {
  const gd = document.querySelector(root + ' .js-plotly-plot');
  let n = 0;
  for (const t of (gd._fullData || gd.data)) {
    if (t.mode !== 'lines' || !t.x) continue;
    for (let i = 0; i < t.x.length; i++) { const v = t.x[i]; if (v === null || Number.isNaN(v)) n++; }
  }
  return n;
}"""
JS_NODE_XY = """([root, node]) => {
  const gd = document.querySelector(root + ' .js-plotly-plot');
  const t = gd._fullData.find(d => d.name === 'nodes');
  const i = Array.from(t.customdata).indexOf(node);
  if (i < 0) return null;
  const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
  return [r.left + xa._offset + xa.l2p(t.x[i]), r.top + ya._offset + ya.l2p(t.y[i])];
}"""
JS_ARM = """(root) => {
  const gd = document.querySelector(root + ' .js-plotly-plot');
  const count = () => { let n = 0; for (const t of gd._fullData) { if (t.mode !== 'lines' || !t.x) continue;
      for (let i = 0; i < t.x.length; i++) { const v = t.x[i]; if (v === null || Number.isNaN(v)) n++; } } return n; };
  const before = count();
  window.__redraw = {before, t0: null, t1: null, after: null, t_kernel: null};
  const st = document.querySelector(root + ' .lib-nb-status');
  new MutationObserver(() => { if (window.__redraw.t0 !== null && window.__redraw.t_kernel === null)
      window.__redraw.t_kernel = performance.now(); }).observe(st, {subtree: true, childList: true, characterData: true});
  gd.on('plotly_afterplot', () => {
    const n = count();
    if (window.__redraw.t0 !== null && window.__redraw.t1 === null && n !== before) {
      window.__redraw.t1 = performance.now(); window.__redraw.after = n; }
  });
  return before;
}"""


def _slider_handle(page, root, label):
    box = page.locator(f'{root} .widget-slider').filter(has=page.locator('label', has_text=label))
    return box.locator('.noUi-handle').first


def _drag(page, handle, dx):
    b = handle.bounding_box()
    x, y = b['x'] + b['width'] / 2, b['y'] + b['height'] / 2
    page.mouse.move(x, y); page.mouse.down(); page.mouse.move(x + dx / 2, y, steps=4); page.mouse.move(x + dx, y, steps=4)
    return x + dx, y


def test_explorer_in_jupyterlab(lab):
    if not Path(CHROMIUM).exists(): _missing(f'Chromium is not installed at {CHROMIUM} (apt-get install chromium)')
    try: from playwright.sync_api import sync_playwright
    except ImportError: _missing('playwright is not installed (pip install playwright; never `playwright install`)')
    sys.path.insert(0, str(ROOT))
    from lib_nb.core import shared_path
    ref, seed0 = shared_path('data/modadd_paper/reference_seed0'), shared_path('data/modadd_paper/seed0')
    if ref is None: pytest.skip('../shared/data/modadd_paper/reference_seed0 is absent')
    _write_notebook(lab['work'] / 'explore.ipynb', ref, seed0 or ref.parent / 'seed0')
    SHOTS.mkdir(parents=True, exist_ok=True)
    print(f'\nscreenshots: {SHOTS}')
    P = '.explorer-paper'
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROME_ARGS)
        try:
            step = '0 load'
            page = browser.new_page(viewport={'width': 1500, 'height': 1000})
            page.add_init_script(WS_SPY)
            console = open(SHOTS / 'console.log', 'w')
            page.on('console', lambda m: console.write(f'{m.type}: {m.text[:500]}\n'))
            page.on('pageerror', lambda e: console.write(f'pageerror: {e}\n'))
            page.goto(f"{lab['base']}/lab/tree/explore.ipynb?token={lab['token']}")
            page.wait_for_selector('.jp-Notebook .jp-Cell', timeout=90_000)
            page.wait_for_selector('.jp-Notebook-ExecutionIndicator[data-status="idle"]', timeout=90_000)
            page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=90_000)     # the kernel is connected
            page.locator('.jp-Cell .jp-InputArea-editor').first.click()
            # run the cells one by one, as a user does, each after the previous one has drawn
            for sel in ['.jp-OutputArea .js-plotly-plot .scatterlayer .trace', f'{P} .js-plotly-plot .scatterlayer .trace',
                        '.explorer-big .js-plotly-plot .scatterlayer .trace']:
                page.keyboard.press('Shift+Enter')
                page.wait_for_selector(sel, timeout=240_000)
                page.wait_for_function('document.querySelector(".jp-Notebook-ExecutionIndicator").dataset.status === "idle"', timeout=240_000)
                page.wait_for_timeout(1000)
            page.locator(P).scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / '01_loaded.png'))

            step = '1 threshold'
            # 1. the threshold slider changes what is drawn (the figure's own data, and the widget's count)
            n0 = page.evaluate(JS_COUNT, P)
            status0 = page.locator(f'{P} .lib-nb-count').inner_text()
            assert n0 > 0 and int(status0) == n0, (n0, status0)
            _drag(page, _slider_handle(page, P, 'strength'), -40); page.mouse.up()
            page.wait_for_function(f'() => ({JS_COUNT})({json.dumps(P)}) !== {n0}', timeout=30_000)
            n1 = page.evaluate(JS_COUNT, P)
            page.wait_for_function(f'() => document.querySelector("{P} .lib-nb-count").innerText === "{n1}"', timeout=30_000)
            assert n1 != n0
            page.screenshot(path=str(SHOTS / '02_threshold_moved.png'))

            step = '2 hover'
            # 2. hover a node: the hover text names it
            node = 'ln1.0:2'
            xy = page.evaluate(JS_NODE_XY, [P, node])
            assert xy is not None, f'{node} is not drawn'
            page.mouse.move(xy[0] - 30, xy[1] - 30); page.mouse.move(*xy, steps=5)
            hover = page.locator(f'{P} .hoverlayer .hovertext')
            hover.first.wait_for(timeout=15_000)
            htxt = hover.first.text_content()
            assert node in htxt and 'layer ln1.0, index 2' in htxt, htxt
            page.screenshot(path=str(SHOTS / '03_hover.png'))

            step = '3 click'
            # 3. click it: the side panel shows its strongest edges (and top inputs with data)
            page.mouse.click(*xy)
            panel = page.locator(f'{P} .lib-nb-panel')
            page.wait_for_function(f'() => document.querySelector("{P} .lib-nb-panel").innerText.includes("{node}")', timeout=30_000)
            ptxt = panel.inner_text()
            assert 'rank' in ptxt and 'in its layer' in ptxt, ptxt
            assert page.locator(f'{P} .lib-nb-out select option').count() >= 3
            assert 'ln2.0:' in page.locator(f'{P} .lib-nb-out select').inner_text()
            if seed0 is not None: assert 'top inputs' in ptxt and 'cos(15x) + cos(15y)' in ptxt, ptxt
            page.screenshot(path=str(SHOTS / '04_clicked.png'))

            step = '3a cluster + faithfulness'
            # the first view is coloured by cluster; select the first cluster and run the faithfulness check
            tab = lambda name: page.locator(f'{P} .lm-TabBar-tab', has_text=name).first.click()
            tab('select')
            page.locator(f'{P} button', has_text='select cluster').click()
            page.wait_for_function(f'() => parseInt(document.querySelector("{P} .lib-nb-nsel")?.innerText || "0") > 1', timeout=30_000)
            n_sel = int(page.locator(f'{P} .lib-nb-nsel').inner_text())
            page.locator(f'{P} button', has_text='faithfulness check').click()
            page.wait_for_selector(f'{P} .lib-nb-faith-score, {P} .lib-nb-faith-missing', timeout=120_000)
            ftxt = page.locator(f'{P} .lib-nb-faith').inner_text()
            sys.path.insert(0, str(ROOT))
            import lib_nb.ablation as A
            if hasattr(A, 'faithfulness') and seed0 is not None:
                # the same cluster, found here without the widget, scored by lib_nb.ablation.faithfulness directly
                from lib_nb.graph import load_graph
                from lib_nb.analysis import adjacency, default_norm, modularity_clusters, selection_nodes
                g = load_graph(ref / 'lib_graph.safetensors')
                adj = adjacency(g, *default_norm(g, ref / 'lib_edge_bisect_ablation.json'), layers=g.node_layers)
                first = modularity_clusters(adj, gamma=1.0, seed=0).clusters[0]
                assert len(first) == n_sel, (len(first), n_sel)
                r = A.faithfulness(g, nodes=selection_nodes(g, first))
                score = page.locator(f'{P} .lib-nb-faith-score').inner_text()
                full = page.locator(f'{P} .lib-nb-faith-full').inner_text()
                assert (score, full) == (f'{r.score:.4g}', f'{r.full:.4g}'), (ftxt, r)
                assert f'kept {r.n_nodes} nodes, {r.n_edges} edges' in ftxt.replace('\n', ' '), ftxt
            else:
                assert page.locator(f'{P} .lib-nb-faith-missing').count() == 1, ftxt
            print(f'faithfulness of a cluster of {n_sel} nodes: {ftxt!r}')
            page.screenshot(path=str(SHOTS / '04a_faithfulness.png'))

            step = '3b edge list'
            # picking an entry of the incoming/outgoing list inspects and selects that node: the selection moves
            page.mouse.click(*page.evaluate(JS_NODE_XY, [P, node]))
            page.wait_for_function(f'() => document.querySelector("{P} .lib-nb-selection").innerText.includes("1 selected: {node}")', timeout=30_000)
            target = page.locator(f'{P} .lib-nb-out select option').first.inner_text().split()[0]
            page.locator(f'{P} .lib-nb-out select').select_option(index=0)
            page.wait_for_function(f'() => document.querySelector("{P} .lib-nb-selection").innerText.includes("1 selected: {target}")', timeout=30_000)
            page.wait_for_function(f'() => document.querySelector("{P} .lib-nb-panel h4").innerText === "{target}"', timeout=30_000)
            marks = page.evaluate(f"""() => {{ const gd = document.querySelector('{P} .js-plotly-plot');
                const t = gd._fullData.find(d => d.name === 'marks'); return Array.from(t.x); }}""")
            assert marks == [1.0], marks                                    # one ring, moved to the column of ln2.0
            page.screenshot(path=str(SHOTS / '04b_edge_list.png'))

            step = '3c annotations'
            # label and pin the inspected node, save the annotations, reload them in a fresh explorer
            page.locator(f'{P} input[placeholder="label of the node"]').fill('my feature')
            page.locator(f'{P} button', has_text='set label').click()
            page.locator(f'{P} button', has_text='pin / unpin').click()
            page.wait_for_function(f"""() => {{ const gd = document.querySelector('{P} .js-plotly-plot');
                return Array.from(gd._fullData.find(d => d.name === 'labels').text || []).some(t => t.trim() === 'my feature'); }}""", timeout=30_000)
            tab('export')
            page.locator(f'{P} button').filter(has_text=re.compile(r'^\s*save\s*$')).click()
            page.wait_for_function(f'() => document.querySelector("{P} .lib-nb-status").innerText.includes("annotations saved")', timeout=30_000)
            ann = json.loads((lab['work'] / 'annotations.json').read_text())
            assert ann['format'] == 'lib_nb.annotations/1' and ann['pins'] == [target], ann['pins']
            assert {'id': target, 'label': 'my feature'}.items() <= next(n for n in ann['nodes'] if n['id'] == target).items()
            page.locator('.jp-Cell').nth(3).locator('.jp-InputArea-editor').click()
            page.keyboard.press('Shift+Enter')
            page.wait_for_selector('.explorer-again .js-plotly-plot .scatterlayer .trace', timeout=240_000)
            page.wait_for_function('() => document.querySelector(".explorer-again .lib-nb-status").innerText.includes("restored annotations")', timeout=60_000)
            page.wait_for_function("""() => { const gd = document.querySelector('.explorer-again .js-plotly-plot');
                return Array.from(gd._fullData.find(d => d.name === 'labels').text || []).some(t => t.trim() === 'my feature'); }""", timeout=30_000)
            page.locator('.explorer-again').scroll_into_view_if_needed()
            page.screenshot(path=str(SHOTS / '04c_annotations_reloaded.png'))

            step = '4 big graph'
            # 4. the 10 x 256 graph: redraw time after a threshold change, measured in the page
            B = '.explorer-big'
            page.locator(B).scroll_into_view_if_needed()
            before = page.evaluate(JS_ARM, B)
            _drag(page, _slider_handle(page, B, 'strength'), 8)
            page.evaluate('() => { window.__redraw.t0 = performance.now(); }'); page.mouse.up()
            page.wait_for_function('() => window.__redraw.t1 !== null', timeout=30_000)
            r = page.evaluate('() => window.__redraw')
            secs = (r['t1'] - r['t0']) / 1000
            big_status = page.locator(f'{B} .lib-nb-status').inner_text()
            ws = [t for t, n in page.evaluate('() => window.__ws_big') if t > r['t0']]
            k_secs = (ws[0] - r['t0']) / 1000 if ws else float('nan')
            print(f'10x256 graph: {before} -> {r["after"]} edges drawn, redraw {secs:.3f} s in the browser '
                  f'(update message arrived after {k_secs:.3f} s); {big_status}')
            page.screenshot(path=str(SHOTS / '05_big_graph.png'))
            assert r['after'] != before
            assert secs < REDRAW_LIMIT_S, f'redraw took {secs:.2f} s'
        except Exception as e:
            page.screenshot(path=str(SHOTS / 'failure.png'))
            try:   # what the kernel thinks the figure's state is
                page.locator('.jp-Cell .jp-InputArea-editor').last.click()
                page.keyboard.press('Escape'); page.keyboard.press('b'); page.keyboard.press('Enter')
                page.keyboard.type("print('DIAG', paper.fig._last_trace_edit_id, paper.fig._trace_edit_in_process, "
                                   "paper.fig._view_count, paper.n_drawn)")
                page.keyboard.press('Shift+Enter'); page.wait_for_timeout(5000)
                print('kernel diagnostics:', [t for t in page.locator('.jp-OutputArea-output').all_inner_texts() if 'DIAG' in t])
            except Exception as d: print('diagnostics failed', d)
            counts = {r: page.evaluate(JS_COUNT, r) for r in (P, '.explorer-big') if page.locator(r + ' .js-plotly-plot').count()}
            raise AssertionError(f'browser test failed at step {step!r} (drawn edge counts {counts})') from e
        finally:
            browser.close(); console.close()
