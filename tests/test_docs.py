"""The rendered docs site (`make docs` -> tools/build_docs.py -> `_docs/`).

Builds the repo's site from the notebooks into a temporary folder (set LIB_NB_DOCS_SITE to an already built
site, e.g. `_docs`, to check that one instead), plus two small fixture sites made here: one with a plotly figure
(to prove the figure check in a real browser) and one that must fail (failed cell, machine path, warning,
broken link). The browser test (`-m browser`) serves a site on 127.0.0.1 and drives Debian's Chromium with
Playwright; it skips when either is missing, except under CI=true where it fails.
"""
import ast, json, os, re, signal, subprocess, sys, threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
BUILD = [sys.executable, str(ROOT / 'tools/build_docs.py')]
CHROMIUM = '/usr/bin/chromium'
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']
SHOTS = ROOT / 'artifacts/docs_screenshots'
sys.path.insert(0, str(ROOT / 'tools'))
import build_docs  # noqa: E402


def _nb(cells):
    "A notebook from (cell_type, source) pairs."
    return {'cells': [{'cell_type': t, 'metadata': {}, 'source': s, **({'outputs': [], 'execution_count': None}
                       if t == 'code' else {})} for t, s in cells],
            'metadata': {'kernelspec': {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}},
            'nbformat': 4, 'nbformat_minor': 4}


def _write(folder: Path, name: str, cells):
    p = folder / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(_nb(cells), indent=1))


def _build(nbs: Path, out: Path, *extra, timeout: float = float(os.environ.get('LIB_NB_DOCS_TIMEOUT', '1800'))):
    "Run tools/build_docs.py; on timeout stop it and its workers (its own process group)."
    p = subprocess.Popen(BUILD + ['--nbs', str(nbs), '--out', str(out), *extra], cwd=ROOT, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try: log, _ = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        log, _ = p.communicate()
        pytest.fail(f'docs build took over {timeout:.0f} s (LIB_NB_DOCS_TIMEOUT):\n{log[-4000:]}')
    return p.returncode, log


def _title_of(nb_path: Path) -> str:
    "The title nbdev takes from a notebook: its first markdown `# ` heading (computed here from the JSON)."
    for c in json.loads(nb_path.read_text())['cells']:
        if c['cell_type'] == 'markdown':
            m = re.search(r'^#\s+(.+)$', ''.join(c['source']), re.M)
            if m: return m.group(1).strip()
    return nb_path.stem


def _html(p: Path):
    from bs4 import BeautifulSoup
    return BeautifulSoup(p.read_text(encoding='utf-8'), 'html.parser')


def _notebooks() -> list[Path]:
    "Every notebook the site must show, found here by globbing (not from the build's sidebar)."
    found = [p for p in NBS.rglob('*.ipynb')
             if not any(part.startswith(('_', '.')) for part in p.relative_to(NBS).parts)]
    return sorted(found)


def _page_of(nb: Path) -> str:
    rel = nb.relative_to(NBS)
    return (rel.parent / (re.sub(r'^\d+[a-zA-Z0-9]*_', '', rel.stem.lower()) + '.html')).as_posix()


# ---------------------------------------------------------------------------------------------------------------
# the repo's site


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "The repo's site, built from the notebooks (or LIB_NB_DOCS_SITE when set)."
    pre = os.environ.get('LIB_NB_DOCS_SITE')
    if pre: return Path(pre).resolve()
    out = tmp_path_factory.mktemp('docs') / '_docs'
    rc, log = _build(NBS, out, '--sidebar', 'keep')    # a stale nbs/sidebar.yml fails test_sidebar_is_current
    print(log)
    assert rc == 0, f'docs build failed:\n{log[-6000:]}'
    return out


def test_sidebar_is_current():
    "nbs/sidebar.yml is what nbdev_sidebar makes for the notebooks now in nbs/ (`make docs` rewrites it)."
    assert (NBS / 'sidebar.yml').read_text() == build_docs.sidebar_yaml(NBS), 'run `python tools/build_docs.py --sidebar-only` (or `make docs`) and commit nbs/sidebar.yml'


def test_sidebar_order():
    "Index first, then the stages in pipeline (file name) order, then the tutorials."
    rels = [r for _, r in build_docs.sidebar_entries(build_docs.sidebar_yaml(NBS))]
    top = [r for r in rels if '/' not in r and r != 'index.ipynb']
    if (NBS / 'index.ipynb').exists(): assert rels[0] == 'index.ipynb'
    assert top == sorted(top)
    assert rels.index(top[-1]) < min([rels.index(r) for r in rels if r.startswith('tutorials/')], default=len(rels))


def test_quarto_config():
    "What nbdev_docs needs for Quarto: nbs/_quarto.yml reading nbdev.yml and sidebar.yml, nbdev.yml from settings.ini."
    import yaml
    assert (NBS / '_quarto.yml').resolve() == (ROOT / '_quarto.yml').resolve()   # the top-level file, where nbdev looks
    q = yaml.safe_load((NBS / '_quarto.yml').read_text())
    assert q['project']['type'] == 'website'
    assert set(q['metadata-files']) == {'nbdev.yml', 'sidebar.yml'}
    assert q['format']['html']['css'] == 'styles.css' and (NBS / 'styles.css').exists()
    n = yaml.safe_load((NBS / 'nbdev.yml').read_text())
    from nbdev.config import get_config
    cfg = get_config()
    assert n['project']['output-dir'] == cfg.doc_path.name == '_docs'
    assert n['website']['title'] == cfg.title and n['website']['repo-url'] == cfg.git_url


def test_every_notebook_has_a_page(site):
    nbs = _notebooks()
    assert NBS / 'index.ipynb' in nbs
    for nb in nbs:
        page = site / _page_of(nb)
        assert page.exists(), f'{nb.relative_to(ROOT)} has no page {page.name}'
        assert _html(page).find('h1', class_='title').get_text(strip=True) == _title_of(nb)


def test_sidebar_mirrors_pipeline(site):
    "Every page's sidebar lists every page, index first, in the order of nbs/sidebar.yml."
    want = [_page_of(NBS / r) for _, r in build_docs.sidebar_entries((NBS / 'sidebar.yml').read_text())]
    for page in want:
        soup = _html(site / page)
        up = '../' * page.count('/')
        hrefs = [a['href'][len(up):] for a in soup.select('nav.libnb-sidebar a')]
        assert hrefs == want, page
        assert soup.select_one('nav.libnb-sidebar a.active')['href'] == up + page


def _api_name(node) -> str:
    "The heading show_doc gives a definition: `Cls.name` for a method added with fastcore's `@patch`, else its name."
    patched = any(getattr(getattr(d, 'func', d), 'id', None) == 'patch' for d in getattr(node, 'decorator_list', []))
    if patched and node.args.args and isinstance(node.args.args[0].annotation, ast.Name):
        return f'{node.args.args[0].annotation.id}.{node.name}'
    return node.name


def test_api_reference(site):
    "Each exported function or class of a stage notebook has a show_doc entry (heading + signature) on its page."
    checked = 0
    for nb in _notebooks():
        cells = json.loads(nb.read_text())['cells']
        names = []
        for c in cells:
            src = ''.join(c['source'])
            if c['cell_type'] != 'code' or not re.match(r'\s*#\|\s*exports?\b', src): continue
            if re.search(r'^\s*#\|\s*hide\b', src, re.M): continue
            try: tree = ast.parse(src)
            except SyntaxError: continue
            names += [_api_name(n) for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
                      and not n.name.startswith('_')]
        if not names: continue
        soup = _html(site / _page_of(nb))
        heads = {h.get_text(' ', strip=True).rstrip('#').strip(): h for h in soup.select('main h3, main h4')}
        for n in names:
            assert n in heads, f'{_page_of(nb)}: no API entry for {n}'
            sig = heads[n].find_next(['pre', 'div'], class_=re.compile('highlight'))
            assert sig is not None and n.split('.')[-1] in sig.get_text(), f'{_page_of(nb)}: {n} has no signature'
            checked += 1
    assert checked > 0


def test_cross_links_resolve(site):
    "Backticked names become links to their API entry; every internal link and anchor exists."
    ids = {p.relative_to(site).as_posix(): {t['id'] for t in _html(p).find_all(id=True)} for p in site.rglob('*.html')}
    n_api_links = 0
    for page in ids:
        for a in _html(site / page).select('main a[href]'):
            href = a['href']
            if re.match(r'^[a-z]+:', href) or href.startswith('//'): continue
            path, _, frag = href.partition('#')
            target = os.path.normpath((Path(page).parent / path).as_posix()) if path else page
            assert target in ids, f'{page}: link {href} -> missing page'
            if frag: assert frag in ids[target], f'{page}: link {href} -> missing anchor'
            if frag and a.find('code'): n_api_links += 1
    assert n_api_links > 0, 'no backticked name was cross-linked'


def test_no_machine_paths_tracebacks_or_outside_resources(site):
    bad = [str(ROOT), '/work/', '/root/', '/home/', '/tmp/', 'site-packages', 'Traceback (most recent call last)']
    for p in site.rglob('*.html'):
        soup = _html(p)
        for t in soup.select('script[src], link[href], img[src]'):
            url = t.get('src') or t.get('href')
            assert not re.match(r'^(https?:)?//', url), f'{p.name} loads {url} from outside the site'
        for t in soup.select('.input_area'): t.decompose()        # code as written may name paths; outputs may not
        text = soup.get_text()
        for b in bad: assert b not in text, f'{p.name} shows {b!r}'
        assert not re.search(r'\b[A-Z][A-Za-z]*Warning: ', text), f'{p.name} shows a warning'


# ---------------------------------------------------------------------------------------------------------------
# fixture sites: a plotly figure, and a build that must fail


@pytest.fixture(scope='module')
def plotly_site(tmp_path_factory):
    "A two-page site whose stage page has a plotly figure (3 markers), a FigureWidget (2), math, a slow cell."
    d = tmp_path_factory.mktemp('fixture_plotly')
    nbs = d / 'nbs'
    _write(nbs, 'index.ipynb', [('markdown', '# Fixture home\n\n> Home page of a fixture site'),
                                ('markdown', 'See the [figure page](fig.html#a-figure). Math: $C^T G C$.')])
    _write(nbs, '01_fig.ipynb', [
        ('markdown', '# Fixture figure\n\n> One plotly figure'),
        ('code', 'import plotly.graph_objects as go'),
        ('markdown', '## A figure'),
        ('code', "go.Figure(go.Scatter(x=[1, 2, 3], y=[3, 1, 2], mode='markers'))"),
        ('markdown', '## A widget'),
        ('code', "import ipywidgets as W\nW.VBox([W.HTML('a box'), go.FigureWidget(go.Scatter(x=[1, 2], y=[2, 1], mode='markers'))])"),
        ('code', 'import tempfile\nprint(tempfile.mkdtemp())   # a throwaway folder: shown as <tmpdir>'),
        ('code', '#| slow\nprint("slow cell")')])
    out = d / '_docs'
    rc, log = _build(nbs, out, '--no-cache')
    assert rc == 0, log
    return out, log


def test_plotly_page_is_self_contained(plotly_site):
    out, log = plotly_site
    soup = _html(out / 'fig.html')
    assert len(soup.select('div.libnb-plotly')) == 2      # a figure, and a FigureWidget's snapshot from widget state
    assert 'a box' in soup.select_one('.libnb-widget-box').get_text()
    assert soup.find('script', src='site_libs/plotly.min.js') and (out / 'site_libs/plotly.min.js').stat().st_size > 1e6
    assert soup.find('math') is None and _html(out / 'index.html').find('math') is not None   # MathML, no MathJax
    assert '<tmpdir>' in soup.get_text() and '/tmp' not in ' '.join(o.get_text() for o in soup.select('.output_area'))
    assert 'slow cell' not in ' '.join(o.get_text() for o in soup.select('.output_area')) and 'flagged' in soup.select_one('.libnb-skipped').get_text()


def test_broken_builds_fail(tmp_path):
    "A failed cell, a machine path, a warning and a broken link each fail the build, named in its report."
    nbs = tmp_path / 'nbs'
    _write(nbs, 'index.ipynb', [('markdown', '# Bad\n\n> A site that must not build'),
                                ('markdown', 'A [broken link](nowhere.html) and [a bad anchor](index.html#nothing).')])
    _write(nbs, '01_fails.ipynb', [('markdown', '# Fails'), ('code', "raise ValueError('boom')")])
    _write(nbs, '02_path.ipynb', [('markdown', '# Path'), ('code', 'import os; print(os.getcwd())')])
    _write(nbs, '03_warns.ipynb', [('markdown', '# Warns'), ('code', "import warnings; warnings.warn('careful')")])
    rc, log = _build(nbs, tmp_path / '_docs', '--no-cache')
    assert rc == 1
    assert "01_fails.ipynb: failed cell" in log and 'ValueError' in log
    assert '02_path.ipynb cell' in log and 'machine path' in log
    assert '03_warns.ipynb cell' in log and 'warning in output' in log
    assert "broken link 'nowhere.html'" in log and "broken link 'index.html#nothing'" in log


# ---------------------------------------------------------------------------------------------------------------
# the browser


def _need_browser():
    if os.environ.get('LIB_NB_SKIP_BROWSER') == '1': pytest.skip('LIB_NB_SKIP_BROWSER=1')
    missing = []
    if not Path(CHROMIUM).exists(): missing.append(f'Chromium at {CHROMIUM} (apt-get install -y chromium)')
    try: import playwright.sync_api  # noqa: F401
    except ImportError: missing.append('playwright for Python (pip install playwright)')
    if missing:
        msg = 'browser test needs ' + ' and '.join(missing)
        if os.environ.get('CI') == 'true': pytest.fail(msg + ' (CI=true: required)')
        pytest.skip(msg)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


class _Server:
    "A static server for `folder` on 127.0.0.1 at an ephemeral port, stopped on exit."
    def __init__(self, folder): self.folder = folder
    def __enter__(self):
        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), partial(_Quiet, directory=str(self.folder)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return f'http://127.0.0.1:{self.httpd.server_address[1]}/'
    def __exit__(self, *a):
        self.httpd.shutdown(); self.httpd.server_close(); self.thread.join(5)


_DRAWN_MARKS = """el => {
  const marks = el.querySelectorAll('svg g.plot .point, svg g.plot path.js-line, svg g.plot image, svg g.plot .bars path,'
                                    + ' svg .scatterlayer path, svg .heatmaplayer image, svg .barlayer path');
  let n = 0;
  for (const m of marks) { const b = m.getBoundingClientRect(); if (b.width > 0 || b.height > 0) n++; }
  return n;
}"""


def _browse(url: str, shots: Path, name: str):
    "Open every page through the sidebar; check titles, console errors and plotly figures; screenshot each."
    from playwright.sync_api import sync_playwright
    shots.mkdir(parents=True, exist_ok=True)
    seen = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={'width': 1400, 'height': 1000})
            errors = []
            page.on('pageerror', lambda e: errors.append(str(e)))
            page.on('console', lambda m: errors.append(m.text) if m.type == 'error' else None)
            page.on('requestfailed', lambda r: errors.append(f'request failed: {r.url}'))
            page.on('response', lambda r: errors.append(f'HTTP {r.status}: {r.url}') if r.status >= 400 else None)
            page.goto(url + 'index.html')
            links = page.eval_on_selector_all('nav.libnb-sidebar a', 'as => as.map(a => [a.textContent, a.href])')
            assert links, 'no sidebar'
            for i, (text, href) in enumerate(links):
                page.goto(url + 'index.html')
                page.locator('nav.libnb-sidebar a').nth(i).click()     # follow the sidebar, as a reader does
                page.wait_for_load_state('load')
                assert page.url == href
                h1 = page.inner_text('h1.title')
                assert h1 == text, f'{href}: heading {h1!r}, sidebar says {text!r}'
                assert page.title().startswith(text), f'{href}: <title> {page.title()!r}'
                figs = page.query_selector_all('div.libnb-plotly')
                drawn = []
                for f in figs:
                    f.scroll_into_view_if_needed()
                    page.wait_for_function('el => el.querySelector("svg.main-svg")', arg=f, timeout=15000)
                    drawn.append(f.evaluate(_DRAWN_MARKS))
                slug = href[len(url):].replace('/', '__').removesuffix('.html')
                page.screenshot(path=str(shots / f'{name}_{slug}.png'), full_page=bool(figs))
                seen[href[len(url):]] = {'title': h1, 'figures': drawn}
            assert not errors, f'browser errors: {errors}'
        finally:
            browser.close()
    return seen


@pytest.mark.browser
def test_browser_fixture_plotly(plotly_site):
    "Chromium draws the fixture's figures: their SVGs hold the 3 and 2 markers the notebook plotted."
    _need_browser()
    out, _ = plotly_site
    with _Server(out) as url: seen = _browse(url, SHOTS, 'fixture')
    print(f'screenshots: {SHOTS}')
    assert seen['fig.html']['title'] == 'Fixture figure'
    assert seen['fig.html']['figures'] == [3, 2]


@pytest.mark.browser
def test_browser_site(site):
    "Chromium opens the home page, follows the sidebar to every page; figures have drawn data points."
    _need_browser()
    with _Server(site) as url: seen = _browse(url, SHOTS, 'site')
    print(f'screenshots: {SHOTS}')
    want = [_page_of(NBS / r) for _, r in build_docs.sidebar_entries((NBS / 'sidebar.yml').read_text())]
    assert sorted(seen) == sorted(want)
    for page, facts in seen.items():
        assert all(n > 0 for n in facts['figures']), f'{page}: a plotly figure drew nothing'


def test_nbdev_proc_nbs_runs(tmp_path):
    """`nbdev_proc_nbs`, the first step of `nbdev_docs` (nbdev's processors over every notebook: it runs the export
    and import cells), finishes without an error and without nbdev's warning about cells that import and compute.
    Run on a copy of nbs/ and settings.ini, so the checkout's sidebar and _proc stay as they are."""
    import shutil
    shutil.copytree(NBS, tmp_path/'nbs'); shutil.copy(ROOT/'settings.ini', tmp_path/'settings.ini')
    r = subprocess.run([str(Path(sys.executable).parent/'nbdev_proc_nbs'), '--n_workers', '1', '--force'], cwd=tmp_path,
                       capture_output=True, text=True, timeout=1800, env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert 'Found cells containing imports and other code' not in r.stderr, r.stderr[-4000:]
    assert len(list((tmp_path/'_proc').rglob('*.ipynb'))) == len(list(NBS.rglob('[!_]*.ipynb')))
