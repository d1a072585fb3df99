"""Write README.md from nbs/index.ipynb (what `nbdev_readme` does, without Quarto, which cannot be installed here).

The notebook is executed with the project's kernel so the README shows real outputs; machine paths are dropped.
Run: .venv/bin/python tools/make_readme.py   (make docs runs it too).
"""
import re, sys
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter
from nbconvert.preprocessors import ExecutePreprocessor

ROOT = Path(__file__).resolve().parents[1]


def main():
    nb = nbformat.read(ROOT/'nbs'/'index.ipynb', as_version=4)
    nb.cells = [c for c in nb.cells if not c.source.lstrip().startswith('#| hide')]
    ExecutePreprocessor(timeout=600, kernel_name='python3').preprocess(nb, {'metadata': {'path': str(ROOT/'nbs')}})
    for c in nb.cells:   # directives and rich reprs: keep the text a reader of a README wants
        if c.cell_type == 'code':
            c.source = '\n'.join(l for l in c.source.splitlines() if not l.startswith('#|'))
            for o in c.get('outputs', []):
                if 'data' in o and 'text/markdown' in o['data']: o['data'] = {'text/markdown': o['data']['text/markdown']}
    body, _ = MarkdownExporter().from_notebook_node(nb)
    body = body.replace(str(ROOT), '.')
    body = re.sub(r'\n{3,}', '\n\n', body)
    header = '<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n'
    (ROOT/'README.md').write_text(header + body.lstrip())
    print(f'wrote README.md ({len(body)} characters)', file=sys.stderr)


if __name__ == '__main__':
    main()
