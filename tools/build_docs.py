"""Build the docs site offline into `_docs/` (what `nbdev_docs` makes with Quarto, made here without it).

`make docs` runs this. The steps follow nbdev's own docs pipeline (`nbdev.serve.proc_nbs` + Quarto), with Quarto
replaced by nbconvert:
1. The notebooks, in pipeline order, are read from `nbs/sidebar.yml`, which is regenerated with nbdev's
   `nbdev_sidebar` logic (index first, then `NN_*.ipynb`, then one section per folder such as `tutorials/`).
2. Each notebook gets nbdev's `add_show_docs` cells (the API reference for `#| export` cells), then is executed
   top to bottom in a Jupyter kernel from this repo's venv, in the notebook's folder, skipping the cells
   `nbdev_test` skips (`nbdev_export()`, `#| eval: false`, and test flags not asked for: `#| slow` by default).
3. The executed notebook goes through nbdev's other doc processors (`FilterDefaults`: front matter, hidden and
   exported cells removed, backticked names cross-linked with `nbdev.doclinks`), then nbconvert's `basic` HTML
   template, inside a page with the sidebar, a table of contents and previous/next links. Plotly figures are
   drawn by `site_libs/plotly.min.js`, copied from the installed plotly package (no public address); LaTeX
   becomes MathML at build time (latex2mathml), so the pages need no script from outside.
4. Checks; any failure exits 1 after writing what it could: a page missing for a notebook, a failed cell, a
   traceback or warning or machine path in an output, a broken internal link or anchor, a resource (script,
   style, image) loaded from outside the site, a figure that is not on its page.

Usage: `python tools/build_docs.py [--out _docs] [--flags slow] [--workers 2] [--nbs nbs] [--sidebar write|check|keep]
[--no-cache]`. An unchanged notebook (same bytes, same lib_nb/**, settings.ini, flags and this script) reuses its
executed output from `_proc/docs_cache/`; `--no-cache` runs everything.
"""
from __future__ import annotations

import argparse, copy, html, io, json, os, re, shutil, sys, time, warnings
from concurrent.futures import ProcessPoolExecutor
from contextlib import redirect_stdout
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------------------------
# Notebook order and the sidebar


def sidebar_yaml(nbs: Path) -> str:
    "The `sidebar.yml` that nbdev's `nbdev_sidebar` writes for `nbs` (index first, folders as sections)."
    from nbdev.quarto import nbdev_sidebar
    buf = io.StringIO()
    with redirect_stdout(buf): nbdev_sidebar.__wrapped__(path=str(nbs), printit=True, force=True)
    return buf.getvalue().rstrip('\n') + '\n'


def sidebar_entries(yml: str) -> list[tuple[str | None, str]]:
    "Flatten a sidebar to `(section or None, notebook path relative to nbs)` in order."
    import yaml
    out = []
    def walk(items, section):
        for it in items:
            if isinstance(it, str): out.append((section, it))
            elif isinstance(it, dict):
                if 'href' in it: out.append((it.get('section'), it['href']))
                walk(it.get('contents', []), it.get('section', section))
    walk(yaml.safe_load(yml)['website']['sidebar']['contents'], None)
    return out


def page_name(rel: str) -> str:
    "The page a notebook becomes, as nbdev names it (`00_core.ipynb` -> `core.html`)."
    from nbdev.doclinks import _nbpath2html
    return _nbpath2html(Path(rel)).as_posix()


# ---------------------------------------------------------------------------------------------------------------
# Output checks: what must never reach a page

_MACHINE_PATHS = [str(ROOT), str(Path.home()), '/work/', '/root/', '/home/', '/tmp/', 'site-packages', '/usr/lib/python']
_BAD_TEXT = [(re.compile(r'Traceback \(most recent call last\)'), 'traceback'),
             (re.compile(r'\b[A-Z][A-Za-z]*Warning: '), 'warning'),     # UserWarning: ..., FutureWarning: ...
             (re.compile(r'^WARNING[:\s]', re.M), 'warning')]


def _texts(out) -> list[str]:
    "All human-readable text of one output."
    if out.get('output_type') == 'stream': return [''.join(out.get('text', ''))]
    if out.get('output_type') == 'error': return ['\n'.join(out.get('traceback', []))]
    data = out.get('data', {})
    return [''.join(v) if isinstance(v, list) else v for k, v in data.items() if k.startswith('text/') and isinstance(v, (str, list))]


_TMPDIR = re.compile(re.escape(os.path.realpath(__import__('tempfile').gettempdir())) + r'/tmp[\w.-]*')


def strip_tmpdirs(cell) -> int:
    "Replace throwaway temporary folders (`/tmp/tmpab12cd`) in text outputs by `<tmpdir>`; return how many."
    n = 0
    def sub(t):
        nonlocal n
        t, k = _TMPDIR.subn('<tmpdir>', t); n += k
        return t
    for o in cell.get('outputs', []):
        if 'text' in o: o['text'] = [sub(t) for t in o['text']] if isinstance(o['text'], list) else sub(o['text'])
        for k, v in list(o.get('data', {}).items()):
            if k.startswith('text/'): o['data'][k] = [sub(t) for t in v] if isinstance(v, list) else sub(v)
    return n


def output_problems(cell, where: str) -> list[str]:
    "Tracebacks, warnings and machine paths in a cell's outputs."
    probs = []
    for out in cell.get('outputs', []):
        if out.get('output_type') == 'error':
            probs.append(f'{where}: failed cell ({out.get("ename")}: {out.get("evalue")})'); continue
        for t in _texts(out):
            for rx, kind in _BAD_TEXT:
                m = rx.search(t)
                if m: probs.append(f'{where}: {kind} in output: {t[max(0, m.start() - 60): m.end() + 100].strip()!r}')
            for p in _MACHINE_PATHS:
                if p and p in t:
                    i = t.index(p)
                    probs.append(f'{where}: machine path {p!r} in output: {t[max(0, i - 60): i + 100].strip()!r}')
    return probs


# ---------------------------------------------------------------------------------------------------------------
# Executing one notebook (in a worker process)

_QUARTO_DIR = re.compile(r'^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')


def _cell_label(i: int, src: str) -> str:
    "`cell 12 (`first code line`)`: the index counts nbdev's added show_doc cells, so the line names the cell."
    first = next((l.strip() for l in src.splitlines() if l.strip() and not l.lstrip().startswith('#|')), '')
    return f'cell {i} ({first[:60]!r})'


def _skip_reason(cell, flags: set[str]) -> str | None:
    "Why `nbdev_test` would not run this cell (mirrors `nbdev.test.test_nb`), or None to run it."
    if cell.cell_type != 'code' or not cell.source.strip(): return None
    if 'nbdev_export' + '(' in cell.source: return 'export'
    d = getattr(cell, 'directives_', {}) or {}
    if d.get('eval:', [''])[0].lower() == 'false': return 'eval: false'
    skipped = (set(_test_flags()) - flags) & d.keys()
    return '#| ' + ' '.join(sorted(skipped)) if skipped else None


def _test_flags() -> list[str]:
    from nbdev.config import get_config
    return get_config().get('tst_flags', '').split()


def _to_execnb(o: dict):
    "An nbformat output as execnb stores it (text as a list of lines, attribute access), as nbdev's processors expect."
    from execnb.nbio import _dict2obj
    def lines(v): return v.splitlines(True) if isinstance(v, str) else v
    if 'text' in o: o['text'] = lines(o['text'])
    if 'data' in o: o['data'] = {k: (lines(v) if k.startswith('text/') else v) for k, v in o['data'].items()}
    out = _dict2obj(o)
    if 'data' in o:   # keep figure JSON as plain dicts
        for k, v in o['data'].items():
            if not k.startswith('text/'): out['data'][k] = v
    return out


def _execute(nb, src: Path, flags: set[str], timeout: int):
    "Run `nb` (an execnb notebook) in a kernel from this venv, in `src`'s folder; copy outputs back."
    import nbformat
    from execnb.nbio import nb2dict
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError
    d = nb2dict(nb)
    d['nbformat'], d['nbformat_minor'] = 4, 4
    for c, cd in zip(nb.cells, d['cells']):
        reason = _skip_reason(c, flags)
        if reason and reason != 'export': c.metadata['libnb_skipped'] = reason
        if reason: cd['source'] = ''
        cd.pop('id', None)
    setup = ('import sys as _s\n'
             f'assert _s.prefix == {sys.prefix!r}, "the docs kernel must run from the repo venv"\n'
             'from nbdev.showdoc import show_doc\ndel _s')
    d['cells'].insert(0, {'cell_type': 'code', 'source': setup, 'metadata': {}, 'outputs': [], 'execution_count': None})
    d['metadata']['kernelspec'] = {'name': 'python3', 'display_name': 'Python 3', 'language': 'python'}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        enb = nbformat.reads(json.dumps(d), as_version=4)
    client = NotebookClient(enb, timeout=timeout, kernel_name='python3', allow_errors=False,
                            resources={'metadata': {'path': str(src.parent)}})
    err = None
    log = open(os.devnull, 'w')    # the kernel process's own log (its TCP notice); cell output comes over iopub
    try: client.execute(stderr=log)
    except CellExecutionError as e: err = e
    finally: log.close()
    setup_out = enb.cells[0].get('outputs', [])
    for c, ec in zip(nb.cells, enb.cells[1:]):
        if c.cell_type == 'code':
            c.outputs = [_to_execnb(o) for o in json.loads(json.dumps(ec.get('outputs', [])))]
            c.execution_count = ec.get('execution_count')
    if any(o.get('output_type') == 'error' for o in setup_out):
        raise RuntimeError('docs kernel setup failed: ' + json.dumps(setup_out)[:2000])
    from datetime import datetime
    slow = []
    for i, ec in enumerate(enb.cells[1:]):
        ex = ec.get('metadata', {}).get('execution', {})
        a, b = ex.get('iopub.execute_input'), ex.get('shell.execute_reply')
        if a and b:
            secs = (datetime.fromisoformat(b.replace('Z', '+00:00')) - datetime.fromisoformat(a.replace('Z', '+00:00'))).total_seconds()
            if secs > 20: slow.append((_cell_label(i, nb.cells[i].source), secs))
        ec.get('metadata', {}).pop('execution', None)
    nb.slow_cells_ = slow
    state = (enb.metadata.get('widgets', {}).get('application/vnd.jupyter.widget-state+json', {}) or {}).get('state', {})
    return err, json.loads(json.dumps(state))


class _WidgetSnapshot:
    "Static HTML for an ipywidgets view from the saved widget state: plotly figures drawn, boxes laid out."
    def __init__(self, state: dict): self.state, self.figs = state, []

    def html(self, model_id: str, depth: int = 0) -> str:
        m = self.state.get(model_id)
        if m is None or depth > 20: return ''
        st, name = m.get('state', {}), m.get('model_name', '')
        if '_widget_data' in st:      # plotly FigureWidget (anywidget)
            self.figs.append({'data': st.get('_widget_data', []), 'layout': st.get('_widget_layout', {}),
                              'config': st.get('_config', {}) or {}})
            return f'LIBNBFIG{len(self.figs) - 1}X'
        kids = [c[len('IPY_MODEL_'):] for c in st.get('children', []) if isinstance(c, str)]
        if kids:
            d = 'row' if name in ('HBoxModel', 'GridBoxModel') else 'column'
            return (f'<div class="libnb-widget-box" style="display:flex;flex-direction:{d};gap:0.4rem">'
                    + ''.join(self.html(k, depth + 1) for k in kids) + '</div>')
        if name == 'HTMLModel': return f'<div class="libnb-widget-html">{st.get("value", "")}</div>'
        if name in ('LabelModel', 'HTMLMathModel'): return f'<span>{html.escape(str(st.get("value", "")))}</span>'
        if 'value' in st and name not in ('OutputModel',):
            desc = html.escape(str(st.get('description', '')))
            return (f'<span class="libnb-widget-control">{desc + " " if desc else ""}'
                    f'<code>{html.escape(str(st["value"]))[:80]}</code></span>')
        return ''


def _plotly_html(fig: dict, n: int) -> str:
    "A div and the script that draws a plotly figure with the site's own plotly.js."
    payload = json.dumps({'data': fig.get('data', []), 'layout': fig.get('layout', {}),
                          'config': {'responsive': True, 'displaylogo': False, **fig.get('config', {})}})
    payload = payload.replace('</', '<\\/')
    return (f'<div class="libnb-plotly" id="libnb-plotly-{n}" data-traces="{len(fig.get("data", []))}"></div>\n'
            f'<script type="text/javascript">(function(){{var f={payload};'
            f'Plotly.newPlot("libnb-plotly-{n}", f.data, f.layout, f.config);}})();</script>')


def process_notebook(args) -> dict:
    "Execute and process one notebook; write the processed notebook to `proc`; return the page's facts."
    try: return _process_notebook(*args)
    except Exception as e:
        import traceback
        return {'rel': args[1], 'problems': [f'{args[1]}: could not be built: {type(e).__name__}: {e}\n'
                                             + traceback.format_exc(limit=-3)], 'notes': [], 'seconds': 0, 'failed': True}


def _process_notebook(src, rel, proc, flags, timeout) -> dict:
    src, proc = Path(src), Path(proc)
    os.chdir(ROOT)
    for k, v in {'HF_HUB_OFFLINE': '1', 'PLOTLY_RENDERER': 'plotly_mimetype', 'TQDM_DISABLE': '1',
                 'PYDEVD_DISABLE_FILE_VALIDATION': '1', 'LIB_NB_DOCS': '1'}.items():
        os.environ[k] = v
    from execnb.nbio import read_nb, write_nb
    from nbdev.process import NBProcessor
    from nbdev.processors import FilterDefaults, add_show_docs, exec_show_docs, populate_language
    t0 = time.time()
    res = {'rel': rel, 'problems': [], 'notes': []}
    nb = read_nb(src)
    # 1. nbdev's show_doc cells first, so the kernel runs them where the documented objects exist
    NBProcessor(nb=nb, procs=[populate_language, add_show_docs], rm_directives=False).process()
    err, wstate = _execute(nb, src, set(flags), timeout)
    if err is not None:
        msg = re.sub(r'\x1b\[[0-9;]*[A-Za-z]', '', str(err)).strip().splitlines()
        res['problems'].append(f'{rel}: failed cell:\n    ' + '\n    '.join(msg[-25:]))
    for i, c in enumerate(nb.cells):
        if c.cell_type == 'code' and 'nbdev_export' + '(' not in c.source:
            if strip_tmpdirs(c): res['notes'].append(f'{rel} {_cell_label(i, c.source)}: temporary folder paths shown as <tmpdir>')
            res['problems'] += output_problems(c, f'{rel} {_cell_label(i, c.source)}')
    res['exec_s'] = time.time() - t0
    for i, secs in getattr(nb, 'slow_cells_', []):
        res['notes'].append(f'{rel} {i} took {secs:.0f} s (STYLE.md: flag cells over ~20 s `#| slow`)')
    # 2. nbdev's other doc processors, as `nbdev_docs` runs them (show_doc outputs already exist)
    procs = [p for p in FilterDefaults().procs() if p not in (populate_language, add_show_docs, exec_show_docs)]
    caught = []
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        NBProcessor(nb=nb, procs=procs).process()
        caught = [str(x.message).splitlines()[0] for x in w]
    if caught: res['notes'].append(f'{rel}: nbdev processing said: ' + '; '.join(sorted(set(caught))))
    fm = getattr(nb, 'frontmatter_', {}) or {}
    res['title'] = str(fm.get('title') or Path(rel).stem)
    res['description'] = str(fm.get('description') or '')
    # plotly figures become HTML outputs drawn by the site's plotly.js; count what a page must show
    nfig, figs = 0, []
    for c in nb.cells:
        for o in c.get('outputs', []):
            data = o.get('data', {})
            if 'application/vnd.plotly.v1+json' in data:
                fig = data['application/vnd.plotly.v1+json']
                nfig += 1
                figs.append(len(fig.get('data', [])))
                o['data'] = {'text/html': _plotly_html(fig, nfig)}
            elif 'application/vnd.jupyter.widget-view+json' in data:
                snap = _WidgetSnapshot(wstate)
                body = snap.html(data['application/vnd.jupyter.widget-view+json'].get('model_id', ''))
                for j, fig in enumerate(snap.figs):
                    nfig += 1
                    figs.append(len(fig.get('data', [])))
                    body = body.replace(f'LIBNBFIG{j}X', _plotly_html(fig, nfig))
                note = ('a static snapshot of an interactive widget: run the notebook in Jupyter to use it'
                        if body else 'an interactive widget: run the notebook in Jupyter to use it')
                o['data'] = {'text/html': f'{body}<p class="libnb-widget-note">({note})</p>'}
    res['plotly'] = figs
    res['images'] = sum(1 for c in nb.cells for o in c.get('outputs', [])
                        if {'image/png', 'image/jpeg', 'image/svg+xml'} & set(o.get('data', {})))
    proc.parent.mkdir(parents=True, exist_ok=True)
    write_nb(nb, proc)
    res['proc'] = str(proc)
    res['seconds'] = time.time() - t0
    return res


# ---------------------------------------------------------------------------------------------------------------
# Rendering a processed notebook to a page

_MATH = re.compile(r'(?<!\\)\$\$(.+?)(?<!\\)\$\$|(?<![\\$\w])\$(?!\s)([^$\n]+?)(?<![\s\\])\$(?![\w$])', re.S)
_CODE = re.compile(r'(^```.*?^```[^\n]*$|^~~~.*?^~~~[^\n]*$|`+[^`]*?`+)', re.S | re.M)
_PANDOC_LINK = re.compile(r'\[([^\]]+)\]\(([^)\s]+)\)\{([^}]*)\}')


def _math_tokens(md: str, store: list) -> str:
    "Replace `$...$` / `$$...$$` outside code with tokens that markdown leaves alone; keep the TeX in `store`."
    def sub_math(m):
        display = m.group(1) is not None
        store.append((m.group(1) if display else m.group(2), display))
        return f'LIBNBMATH{len(store) - 1}X'
    parts = _CODE.split(md)
    return ''.join(p if i % 2 else _MATH.sub(sub_math, p) for i, p in enumerate(parts))


def _pandoc_links(md: str) -> str:
    "nbdev's show_doc writes `[source](url){target=...}` (pandoc attributes): make it a plain HTML link."
    def f(m):
        cls = 'libnb-source' if m.group(1) == 'source' else ''
        return f'<a href="{html.escape(m.group(2))}" class="{cls}" target="_blank" rel="noopener">{html.escape(m.group(1))}</a>'
    return _PANDOC_LINK.sub(f, md)


def _mathml(tex: str, display: bool, notes: list, rel: str) -> str:
    from latex2mathml.converter import convert
    try: return convert(tex.strip(), display='block' if display else 'inline')
    except Exception as e:
        notes.append(f'{rel}: LaTeX not converted ({type(e).__name__}), shown as TeX: {tex.strip()[:80]!r}')
        return f'<code class="libnb-tex">{html.escape(tex)}</code>'


def _slug(text: str) -> str:
    "Pandoc's automatic identifier for a heading (what Quarto and nbdev's doc links use)."
    s = re.sub(r'[^\w\s.-]', '', text.strip().lower(), flags=re.UNICODE)
    s = re.sub(r'\s+', '-', s)
    s = re.sub(r'^[^a-z_]+', '', s)
    return s or 'section'


def _cell_directives(src: str) -> tuple[dict, str]:
    "Quarto `#| key: value` lines at the top of a code cell, and the source without them."
    lines, d = src.splitlines(), {}
    while lines and _QUARTO_DIR.match(lines[0]):
        k, v = _QUARTO_DIR.match(lines[0]).groups(); d[k] = v.strip('"\''); lines.pop(0)
    return d, '\n'.join(lines)


def render_body(proc_path: Path, rel: str, notes: list) -> str:
    "The HTML of a processed notebook's cells (nbconvert's `basic` template), math and links resolved."
    import nbformat
    from nbconvert import HTMLExporter
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        nb = nbformat.read(proc_path, as_version=4)
    math: list = []
    cells = []
    for c in nb.cells:
        if c.cell_type == 'raw': continue          # front matter (rendered in the page header) and raw cells
        if c.cell_type == 'markdown':
            c.source = _math_tokens(_pandoc_links(c.source), math)
            if not c.source.strip() or c.source.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'): continue
            cells.append(c); continue
        d, c.source = _cell_directives(c.source)
        if d.get('include') == 'false': continue
        if d.get('output') == 'false': c.outputs = []
        hide_src = d.get('echo') == 'false' or not c.source.strip()
        if hide_src: c.metadata.setdefault('transient', {})['remove_source'] = True
        skipped = c.metadata.get('libnb_skipped')
        for o in c.get('outputs', []):
            md = o.get('data', {}).get('text/markdown')
            if md is not None:
                o['data'] = {'text/markdown': _math_tokens(_pandoc_links(''.join(md)), math)}
        if hide_src and not c.get('outputs'): continue
        cells.append(c)
        if skipped:
            cells.append(nbformat.v4.new_markdown_cell(
                f'<p class="libnb-skipped">This cell is flagged <code>{html.escape(skipped)}</code> and was not run for '
                f'these pages (run <code>make docs DOCS_FLAGS="{html.escape(skipped.replace("#| ", ""))}"</code> '
                f'or <code>nbdev_test --flags ...</code>).</p>'))
    nb.cells = cells
    exp = HTMLExporter(template_name='basic', exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exp.from_notebook_node(nb)
    body = re.sub(r'LIBNBMATH(\d+)X', lambda m: _mathml(*math[int(m.group(1))], notes, rel), body)
    return body


_STYLE_FALLBACK = ''


def page_html(*, title, description, body, nav, toc, here, prev, nxt, site_title, has_plotly) -> str:
    "One page of the site: header, sidebar, content, table of contents, previous/next."
    up = '../' * here.count('/')
    def rel(p): return up + p
    nav_html, section = [], None
    for sec, href, text in nav:
        if sec != section:
            if section is not None: nav_html.append('</ul></li>')
            if sec is not None: nav_html.append(f'<li class="libnb-nav-section"><span>{html.escape(sec)}</span><ul>')
            section = sec
        cur = ' class="active" aria-current="page"' if href == here else ''
        nav_html.append(f'<li><a href="{rel(href)}"{cur}>{html.escape(text)}</a></li>')
    if section is not None: nav_html.append('</ul></li>')
    toc_html = ''.join(f'<li class="toc-{lvl}"><a href="#{html.escape(i)}">{html.escape(t)}</a></li>' for lvl, i, t in toc)
    pn = ''
    if prev: pn += f'<a class="libnb-prev" href="{rel(prev[0])}">&larr; {html.escape(prev[1])}</a>'
    if nxt: pn += f'<a class="libnb-next" href="{rel(nxt[0])}">{html.escape(nxt[1])} &rarr;</a>'
    plotly = f'<script src="{rel("site_libs/plotly.min.js")}" charset="utf-8"></script>\n' if has_plotly else ''
    desc = f'<p class="libnb-description">{html.escape(description)}</p>' if description else ''
    head_title = html.escape(title if title == site_title else f'{title} – {site_title}')
    return f'''<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="description" content="{html.escape(description)}">
<title>{head_title}</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{rel('site_libs/pygments.css')}">
<link rel="stylesheet" href="{rel('styles.css')}">
{plotly}</head>
<body class="libnb">
<header class="libnb-header"><a class="libnb-brand" href="{rel('index.html')}">{html.escape(site_title)}</a></header>
<div class="libnb-layout">
<nav class="libnb-sidebar" aria-label="Pages"><ul>
{''.join(nav_html)}
</ul></nav>
<main class="libnb-main" id="content">
<header class="libnb-title-block"><h1 class="title">{html.escape(title)}</h1>{desc}</header>
{body}
<nav class="libnb-pagenav">{pn}</nav>
</main>
<aside class="libnb-toc" aria-label="On this page"><h2>On this page</h2><ul>{toc_html}</ul></aside>
</div>
</body>
</html>
'''


def finish_body(body: str, here: str, doc_root: str) -> tuple[str, list]:
    "Heading ids as Pandoc makes them, our own doc links made relative, and the page's table of contents."
    from bs4 import BeautifulSoup
    soup = BeautifulSoup(body, 'html.parser')
    seen, toc = {}, []
    for h in soup.find_all(['h1', 'h2', 'h3', 'h4', 'h5', 'h6']):
        for a in h.find_all('a', class_='anchor-link'): a.decompose()
        text = h.get_text(' ', strip=True)
        sid = _slug(text)
        if sid in seen: seen[sid] += 1; sid = f'{sid}-{seen[sid]}'
        else: seen[sid] = 0
        h['id'] = sid
        anchor = soup.new_tag('a', attrs={'class': 'anchor-link', 'href': f'#{sid}', 'aria-hidden': 'true'})
        anchor.string = '#'
        h.append(anchor)
        if h.name in ('h2', 'h3'): toc.append((h.name, sid, text))
    up = '../' * here.count('/')
    for a in soup.find_all('a', href=True):
        if a['href'].startswith(doc_root): a['href'] = up + a['href'][len(doc_root):]
    return str(soup), toc


# ---------------------------------------------------------------------------------------------------------------
# Site-wide checks


def repair_member_links(out: Path, notes: list) -> None:
    "nbdev links `Class.method` to `page.html#class.method`; methods without their own show_doc entry are shown in "
    "their class's entry, so such a link goes to `#class` (what a reader of the Quarto site would scroll to)."
    from bs4 import BeautifulSoup
    files = {f.relative_to(out).as_posix(): f for f in out.rglob('*.html')}
    ids = {r: set(re.findall(r'\bid="([^"]+)"', f.read_text(encoding='utf-8'))) for r, f in files.items()}
    for r, f in files.items():
        text = f.read_text(encoding='utf-8')
        def fix(m):
            href = m.group(1)
            path, _, frag = href.partition('#')
            if not frag or '.' not in frag or re.match(r'^[a-z]+:', href): return m.group(0)
            target = os.path.normpath((Path(r).parent / path).as_posix()) if path else r
            have = ids.get(target)
            if have is None or frag in have: return m.group(0)
            parent = frag.rsplit('.', 1)[0]
            if parent not in have: return m.group(0)
            notes.append(f'{r}: link to {href} (no entry of its own) goes to #{parent}')
            return f'href="{path}#{parent}"'
        new = re.sub(r'href="([^"]*#[^"]*)"', fix, text)
        if new != text: f.write_text(new, encoding='utf-8')


def check_site(out: Path, pages: list[str], figures: dict[str, int]) -> list[str]:
    "Broken internal links and anchors, resources from outside the site, figures missing from their pages."
    from bs4 import BeautifulSoup
    from urllib.parse import urlsplit, unquote
    probs, ids = [], {}
    soups = {}
    for f in sorted(out.rglob('*.html')):
        rel = f.relative_to(out).as_posix()
        soups[rel] = BeautifulSoup(f.read_text(encoding='utf-8'), 'html.parser')
        ids[rel] = {t['id'] for t in soups[rel].find_all(id=True)}
    for p in pages:
        if p not in soups: probs.append(f'{p}: page missing')
    for rel, soup in soups.items():
        for tag, attr in (('a', 'href'), ('link', 'href'), ('script', 'src'), ('img', 'src'), ('iframe', 'src'),
                          ('source', 'src')):
            for t in soup.find_all(tag, attrs={attr: True}):
                url = t[attr]
                u = urlsplit(url)
                if u.scheme in ('data', 'mailto', 'javascript'): continue
                if u.scheme or url.startswith('//'):
                    if tag != 'a': probs.append(f'{rel}: <{tag} {attr}="{url}"> loads from outside the site')
                    continue
                target = (Path(rel).parent / unquote(u.path)).as_posix() if u.path else rel
                target = os.path.normpath(target)
                if u.path and not (out / target).exists():
                    probs.append(f'{rel}: broken link {url!r} (no {target})'); continue
                if u.fragment and target.endswith('.html') and u.fragment not in ids.get(target, set()):
                    probs.append(f'{rel}: broken link {url!r} (no #{u.fragment} in {target})')
        main = soup.find('main')
        want = figures.get(rel, 0)
        got = len(main.select('div.libnb-plotly')) + len(main.select('.output_area img, .output_area svg')) if main else 0
        if got < want: probs.append(f'{rel}: {want} figure(s) in the executed notebook, {got} on the page')
        for div in (main.select('div.libnb-plotly') if main else []):
            if div.get('data-traces') in (None, '0'): probs.append(f'{rel}: plotly figure {div.get("id")} has no data')
    return probs


# ---------------------------------------------------------------------------------------------------------------


def _cache_key(nb: Path, flags) -> str:
    "What an executed notebook depends on here: itself, the library (lib_nb/**), settings.ini, this script, flags."
    import hashlib
    h = hashlib.sha256()
    for f in [nb, ROOT / 'settings.ini', Path(__file__)] + sorted(p for p in (ROOT / 'lib_nb').rglob('*')
                                                               if p.is_file() and '__pycache__' not in p.parts):
        h.update(str(f.relative_to(ROOT) if f.is_relative_to(ROOT) else f.name).encode()); h.update(f.read_bytes())
    h.update(' '.join(sorted(flags)).encode()); h.update(sys.version.encode())
    return h.hexdigest()[:32]


def _cache_get(cache: Path, nb: Path, flags, proc: Path) -> dict | None:
    k = _cache_key(nb, flags)
    j, n = cache / f'{k}.json', cache / f'{k}.ipynb'
    if not (j.exists() and n.exists()): return None
    res = json.loads(j.read_text())
    proc.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(n, proc)
    return {**res, 'proc': str(proc), 'seconds': 0.0}


def _cache_put(cache: Path, nb: Path, flags, res: dict):
    cache.mkdir(parents=True, exist_ok=True)
    k = _cache_key(nb, flags)
    shutil.copy(res['proc'], cache / f'{k}.ipynb')
    (cache / f'{k}.json').write_text(json.dumps({k2: v for k2, v in res.items() if k2 != 'proc'}))


def build(out: Path, nbs: Path, flags: list[str], workers: int, timeout: int, sidebar: str = 'write',
          proc_dir: Path | None = None, cache: Path | None = None) -> int:
    from nbdev.config import get_config
    t0 = time.time()
    os.chdir(ROOT)
    cfg = get_config()
    yml = sidebar_yaml(nbs)
    sb = nbs / 'sidebar.yml'
    if not sb.exists() or sb.read_text() != yml:
        if sidebar == 'check':
            print(f'FAIL {sb} is not what nbdev_sidebar makes for the notebooks in {nbs}; run `make docs` and '
                  f'commit it. Expected:\n{yml}')
            return 1
        if sidebar == 'write':
            sb.write_text(yml)
            print(f'updated {sb.relative_to(ROOT) if sb.is_relative_to(ROOT) else sb}')
        else: print(f'note: {sb} is stale (`make docs` rewrites it); this build uses the notebooks found now')
    entries = sidebar_entries(yml)
    rels = [r for _, r in entries]
    problems, notes = [], []
    if 'index.ipynb' not in rels: problems.append(f'{nbs}/index.ipynb is missing: the site has no home page')
    for r in rels:
        if not (nbs / r).exists(): problems.append(f'{r}: in sidebar.yml but not in {nbs}')
    rels = [r for r in rels if (nbs / r).exists()]
    site_title = cfg.get('title', cfg.lib_name)
    doc_root = cfg.doc_host.rstrip('/') + '/' + cfg.doc_baseurl.strip('/')
    doc_root = doc_root.rstrip('/') + '/'
    if out.exists(): shutil.rmtree(out)
    out.mkdir(parents=True)
    import tempfile
    tmp = None
    if proc_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix='libnb_docs_')
        proc_dir = Path(tmp.name)
    results, jobs = {}, []
    for r in rels:
        hit = _cache_get(cache, nbs / r, flags, proc_dir / r) if cache else None
        if hit: results[r] = hit; notes += hit['notes']; print(f'ok   {r} (unchanged: executed output reused)')
        else: jobs.append((str(nbs / r), r, str(proc_dir / r), list(flags), timeout))
    print(f'docs: {len(jobs)} notebooks to execute, flags {flags or "none"} (skipping cells flagged '
          f'{sorted(set(_test_flags()) - set(flags))}), {workers} worker(s)', flush=True)
    # longest first (times from the last build), so that two workers finish together
    times_f = ROOT / '_proc/docs_times.json'
    try: times = json.loads(times_f.read_text())
    except (OSError, ValueError): times = {}
    jobs.sort(key=lambda j: -times.get(j[1], 1e9))
    from concurrent.futures import as_completed
    with ProcessPoolExecutor(max(1, min(workers, len(jobs) or 1)), mp_context=get_context('spawn')) as ex:
        for fut in as_completed([ex.submit(process_notebook, j) for j in jobs]):
            r = fut.result()
            times[r['rel']] = r['seconds']
            if not r.get('failed'): results[r['rel']] = r
            problems += r['problems']; notes += r['notes']
            print(f"{'ok  ' if not r['problems'] else 'FAIL'} {r['rel']} ({r['seconds']:.0f} s)", flush=True)
            if cache and not r['problems'] and not r.get('failed'): _cache_put(cache, nbs / r['rel'], flags, r)
    try: times_f.parent.mkdir(exist_ok=True); times_f.write_text(json.dumps(times, indent=1))
    except OSError: pass
    # pages
    all_pages = [page_name(r) for r in rels]
    rels = [r for r in rels if r in results]
    nav = [(None if r == 'index.ipynb' else sec, page_name(r), results[r]['title']) for sec, r in entries if r in results]
    pages, figures = [page_name(r) for r in rels], {}
    any_plotly = False
    for i, r in enumerate(rels):
        res, here = results[r], page_name(r)
        body = render_body(Path(res['proc']), r, notes)
        body, toc = finish_body(body, here, doc_root)
        has_plotly = bool(res['plotly'])
        any_plotly |= has_plotly
        figures[here] = len(res['plotly']) + res['images']
        prev = (nav[i - 1][1], nav[i - 1][2]) if i > 0 else None
        nxt = (nav[i + 1][1], nav[i + 1][2]) if i + 1 < len(nav) else None
        title = site_title if r == 'index.ipynb' and not res['title'] else res['title']
        page = page_html(title=title, description=res['description'], body=body, nav=nav, toc=toc, here=here,
                         prev=prev, nxt=nxt, site_title=site_title, has_plotly=has_plotly)
        (out / here).parent.mkdir(parents=True, exist_ok=True)
        (out / here).write_text(page, encoding='utf-8')
    # assets: styles, pygments, plotly.js (from the installed package, only when a page draws a figure)
    from pygments.formatters import HtmlFormatter
    (out / 'site_libs').mkdir(exist_ok=True)
    (out / 'site_libs/pygments.css').write_text(HtmlFormatter(style='default').get_style_defs('.highlight'))
    css = nbs / 'styles.css'
    shutil.copy(css if css.exists() else ROOT / 'nbs/styles.css', out / 'styles.css')
    if any_plotly:
        import plotly
        shutil.copy(Path(plotly.__file__).parent / 'package_data/plotly.min.js', out / 'site_libs/plotly.min.js')
    (out / '.nojekyll').write_text('')
    repair_member_links(out, notes)
    problems += check_site(out, all_pages, figures)
    if tmp is not None: tmp.cleanup()
    for n in notes: print(f'note: {n}')
    secs = time.time() - t0
    if problems:
        print(f'\ndocs: {len(problems)} problem(s):')
        for p in problems: print(f'  - {p}')
        print(f'docs: FAILED after {secs:.0f} s; pages written to {out}')
        return 1
    print(f'docs: {len(pages)} pages written to {out} in {secs:.0f} s')
    if secs > 300: print('note: the docs build took over five minutes: make the slowest notebooks above faster '
                         'or flag their heavy cells `#| slow`')
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', default=str(ROOT / '_docs'), help='site folder (replaced)')
    ap.add_argument('--nbs', default=None, help='notebook folder (default: nbs_path of settings.ini)')
    ap.add_argument('--flags', default=os.environ.get('DOCS_FLAGS', ''),
                    help='test flags whose cells also run, space separated (e.g. "slow")')
    ap.add_argument('--workers', type=int, default=int(os.environ.get('DOCS_WORKERS', '2')))
    ap.add_argument('--timeout', type=int, default=600, help='seconds per cell')
    ap.add_argument('--sidebar', choices=['write', 'check', 'keep'], default='write',
                    help='when nbs/sidebar.yml is stale: rewrite it (default), fail, or keep it and build anyway')
    ap.add_argument('--proc', default=None, help='keep the executed, processed notebooks in this folder')
    ap.add_argument('--no-cache', action='store_true',
                    help='execute every notebook (by default an unchanged notebook, with an unchanged lib_nb, '
                         'reuses its last executed output from _proc/docs_cache)')
    ap.add_argument('--sidebar-only', action='store_true', help='only rewrite nbs/sidebar.yml (seconds), build nothing')
    a = ap.parse_args(argv)
    os.chdir(ROOT)
    from nbdev.config import get_config
    nbs = Path(a.nbs).resolve() if a.nbs else get_config().nbs_path
    if a.sidebar_only:
        (nbs / 'sidebar.yml').write_text(sidebar_yaml(nbs)); print(f'wrote {nbs / "sidebar.yml"}')
        return 0
    return build(Path(a.out).resolve(), nbs, a.flags.split(), a.workers, a.timeout, a.sidebar,
                 Path(a.proc).resolve() if a.proc else None, None if a.no_cache else ROOT / '_proc/docs_cache')


if __name__ == '__main__':
    sys.exit(main())
